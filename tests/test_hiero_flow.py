"""The Nuke Studio / Hiero timeline: right-click a shot ▸ BodyDouble ▸ Extend shot… against the fake
`hiero` + `nuke` and a real server on the embedded model. What the fake cannot prove about a real
Nuke Studio is listed in docs/nuke.md."""
from __future__ import annotations

import json
import runpy
import sys
import threading
import uuid
from pathlib import Path

import pytest

from bodydouble import errors
from bodydouble.jobspec import expand_pattern

from .support import REPO, free_port, make_video_adapters, server_thread

NUKE_DIR = REPO / "host_integration" / "nuke"
FAKE_DIR = REPO / "tests" / "fake_nuke"
EXTEND = "BodyDouble/Extend shot…"
FILL = "BodyDouble/Fill unseen angle…"
MEDIA = (1001, 1008)          # the plate's files on disk
CUT = (1003, 1006)            # the part of it the edit uses: 2 frames of handle each side


@pytest.fixture(scope="module")
def plate(studio):
    from bodydouble_server import samples

    pattern, _ = samples.write_sequence(Path(studio["root"]) / "shots" / "sh020" / "plates", *MEDIA, 96, 64,
                                        name="sh020_plate")
    return pattern


@pytest.fixture
def studio_app(server, tmp_path, monkeypatch):
    """A fresh fake Nuke Studio GUI session with the plugin installed through NUKE_PATH (init.py, menu.py)."""
    for path in (str(FAKE_DIR), str(NUKE_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import hiero
    import nuke

    assert Path(hiero.__file__).parent == FAKE_DIR / "hiero"
    nuke._reset(gui=True, script=str(tmp_path / "comp_v001.nk"), studio=True)
    hiero._reset()
    from bodydouble_nuke import timeline

    timeline._handler.clear()                 # the fake's event registry was just emptied
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", server.bound_address)
    monkeypatch.setenv("BODYDOUBLE_NUKE_PREFS", str(tmp_path / "prefs.json"))
    runpy.run_path(str(NUKE_DIR / "init.py"))
    runpy.run_path(str(NUKE_DIR / "menu.py"))   # Nuke Studio runs menu.py: it registers the timeline too
    yield nuke, hiero
    for running in list(timeline._running.values()):
        running.job.cancel()
        running.job.join(30)
    timeline._running.clear()


def _edit(hiero, plate, shot=None, colour="ACEScg", config=None):
    """A project with one sequence whose Video 1 track holds the cut of ``plate`` at timeline 1001; ``config``: the
    project's OCIO config (default: Nuke's built-in ACES cg config); ``colour`` None: the clip keeps its default."""
    core = hiero.core
    project = core.Project("show")
    if config is not None:
        project._colour_management(config)
    sequence = core.Sequence("edit_v001")
    project.clipsBin().addItem(core.BinItem(sequence))
    clip = core.Clip(plate)
    project.clipsBin().addItem(core.BinItem(clip))
    if colour is not None:
        clip.setSourceMediaColourTransform(colour)
    track = core.VideoTrack("Video 1")
    sequence.addTrack(track)
    item = track.addTrackItem(clip, 1001)
    item.setTimes(1001, 1001 + CUT[1] - CUT[0], CUT[0] - MEDIA[0], CUT[1] - MEDIA[0])
    item.setName(shot or f"sh_{uuid.uuid4().hex[:8]}")    # own shot: take numbers start at 1
    return project, sequence, track, item


def _extend_form(nuke, frames="3", adapter="hero", prompt="she keeps walking", seed="7", steps="2"):
    nuke._answer_form({"new frames": frames, "adapter": adapter, "prompt": prompt, "seed": seed, "steps": steps})


def _spy_main_thread(hiero, monkeypatch) -> list:
    """(thread name, function) of every hand-over to the main thread from now on."""
    calls = []
    original = hiero.core.executeInMainThread

    def spy(call, *args, **kwargs):
        calls.append((threading.current_thread().name, call.__name__))
        return original(call, *args, **kwargs)

    monkeypatch.setattr(hiero.core, "executeInMainThread", spy)
    return calls


def _wait_idle(nuke, timeout=240):
    from bodydouble_nuke import timeline

    nuke._process_events(until=lambda: not timeline._running, timeout=timeout)


@pytest.fixture(scope="module")
def video_server(studio, tmp_path_factory):
    """A real server on the embedded test models whose adapters are trained for its video model
    (synthetic, random): extend runs on the video model and refuses image adapters."""
    from bodydouble_server.config import ServerConfig

    adapters = tmp_path_factory.mktemp("video_adapters")
    make_video_adapters(adapters, {"hero": 5, "villain": 9})
    config = ServerConfig(port=0, roots=[str(studio["root"])], adapters=str(adapters),
                          output_root=str(studio["root"] / "takes"), resolution=64)
    with server_thread(config) as srv:
        yield srv


@pytest.fixture
def on_video_server(studio_app, video_server, monkeypatch):
    """The session of ``studio_app``, pointed at the video server (after studio_app set its address)."""
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", video_server.bound_address)
    return studio_app


# -- the menu --------------------------------------------------------------------------------
def test_right_click_offers_extend_and_fill_on_one_video_item(studio_app, plate):
    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate)
    menu = hiero._right_click(sequence, item)
    assert menu._find(EXTEND).isEnabled() and menu._find(FILL).isEnabled()
    nothing = hiero._right_click(sequence)
    assert not nothing._find(EXTEND).isEnabled() and not nothing._find(FILL).isEnabled()
    nothing._find(EXTEND).trigger()            # a disabled entry does nothing
    assert nuke._messages == [] and nuke._forms == []


def test_the_startup_script_installs_the_menu_once(studio_app, plate, tmp_path, monkeypatch):
    """Hiero loads <HIERO_PLUGIN_PATH>/Python/Startup/*.py (Foundry's loader, as the fake mirrors it); with
    NUKE_PATH's menu.py as well, one entry only."""
    _, hiero = studio_app
    import hiero.core.find_plugins as loader

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HIERO_PLUGIN_PATH", str(NUKE_DIR))
    monkeypatch.setenv("HOME", str(tmp_path))
    loader.findPlugins()
    assert loader._errors == [] and hasattr(hiero.plugins, "bodydouble_timeline")
    _, sequence, _, item = _edit(hiero, plate)
    menu = hiero._right_click(sequence, item)
    assert len(menu._entries) == 1 and [a.text() for a in menu._entries[0]._entries] == [
        "Extend shot…", "Fill unseen angle…"]


def test_plain_nuke_gets_no_timeline_menu_though_hiero_imports(server, tmp_path, monkeypatch):
    """In plain Nuke ``hiero`` imports too; only ``nuke.env['studio']`` says Nuke Studio."""
    for path in (str(FAKE_DIR), str(NUKE_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import hiero
    import nuke
    from bodydouble_nuke import timeline

    nuke._reset(gui=True, script=str(tmp_path / "comp.nk"), studio=False)
    hiero._reset()
    timeline._handler.clear()
    monkeypatch.setenv("BODYDOUBLE_NUKE_PREFS", str(tmp_path / "prefs.json"))
    runpy.run_path(str(NUKE_DIR / "init.py"))
    runpy.run_path(str(NUKE_DIR / "menu.py"))
    assert timeline._handler == [] and nuke.menu("Node Graph").findItem("BodyDouble/Fill unseen angle…") is not None


# -- reading the shot ------------------------------------------------------------------------
@pytest.mark.parametrize("filename, pattern", [
    ("/shows/x/sh010.####.exr (1001-1048)", "/shows/x/sh010.####.exr"),
    ("/shows/x/sh010.%04d.exr", "/shows/x/sh010.####.exr"),
    ("/shows/x/sh010.1001.exr", "/shows/x/sh010.####.exr"),
    ("/shows/x/sh010.-0005.exr (-5-20)", "/shows/x/sh010.####.exr"),   # the sign is part of the frame token
])
def test_media_file_names_become_hash_patterns(filename, pattern):
    from bodydouble_nuke import timeline

    assert timeline.media_pattern(filename) == pattern


def test_the_shot_is_read_in_file_frames(studio_app, plate):
    from bodydouble_nuke import hiero_api, timeline

    _, hiero = studio_app
    _, _, _, item = _edit(hiero, plate, shot="sh020")
    shot = timeline.shot_of(hiero_api.read_item(item))
    assert (shot.name, shot.pattern, shot.source_in, shot.source_out) == ("sh020", plate, *CUT)
    assert (shot.handle_in, shot.handle_out, shot.timeline_out) == (2, 2, 1004)
    assert (shot.fps, shot.colour_transform, shot.track) == (24.0, "ACEScg", "Video 1")


def test_source_in_counts_from_the_clips_first_frame(studio_app, plate):
    """A clip that starts 2 frames into media numbered from 1001 (whose scans carry a timecode): the item's
    sourceIn 1 is the clip's second frame, file 1004 (not 1002, counting from the media's first frame)."""
    from bodydouble_nuke import hiero_api, timeline

    _, hiero = studio_app
    core = hiero.core
    project = core.Project("show")
    sequence = core.Sequence("edit")
    project.clipsBin().addItem(core.BinItem(sequence))
    clip = core.Clip(plate, MEDIA[0] + 2, MEDIA[1])
    clip.mediaSource()._timecode = 86400          # 01:00:00:00 at 24 fps
    project.clipsBin().addItem(core.BinItem(clip))
    track = core.VideoTrack("Video 1")
    sequence.addTrack(track)
    item = track.addTrackItem(clip, 1001)
    assert (item.sourceIn(), clip.mediaSource().fileinfos()[0].startFrame()) == (0, 1001)
    item.setTimes(1001, 1003, 1, 3)
    shot = timeline.shot_of(hiero_api.read_item(item))
    assert (shot.source_in, shot.source_out) == (1004, 1006)


# -- extend ----------------------------------------------------------------------------------
def test_right_click_extend_puts_the_take_on_a_new_track_after_the_shot(on_video_server, studio_app, plate, studio, monkeypatch):
    import OpenImageIO as oiio

    nuke, hiero = studio_app
    project, sequence, track, item = _edit(hiero, plate)
    shot = item.name()
    before = [(i.name(), i.timelineIn(), i.timelineOut(), i.sourceIn(), i.sourceOut()) for i in track.items()]
    main_calls = _spy_main_thread(hiero, monkeypatch)
    _extend_form(nuke)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    form = nuke._forms[-1]
    assert f"after frame {CUT[1]}" in form.title and "2 frame(s) of handle" in form.title
    assert form.fields["adapter"][2] == ["hero", "villain"], "only adapters ready for the server's model"
    _wait_idle(nuke)
    assert nuke._messages == []
    assert main_calls == [("bodydouble-hiero-wait", "_accepted"), ("bodydouble-hiero-wait", "_finish")], \
        "the worker hands over through the main thread only"
    assert item.tags() == (), "the job's tag on the shot goes when the job ends"

    # the original track is untouched; the take is on a new track right after the shot
    assert [(i.name(), i.timelineIn(), i.timelineOut(), i.sourceIn(), i.sourceOut()) for i in track.items()] == before
    new_track = sequence.videoTracks()[-1]
    assert len(sequence.videoTracks()) == 2 and new_track.name() == "BodyDouble hero take 001"
    (placed,) = new_track.items()
    assert (placed.timelineIn(), placed.timelineOut()) == (item.timelineOut() + 1, item.timelineOut() + 3)
    name = f"{shot}_hero_take001"
    assert placed.name() == name
    # Everything BodyDouble added is one undo group: one Edit > Undo takes the placement back.
    ours = [edit for edit in project._edits if edit[0] is not None]
    assert {group for group, _ in ours} == {f"BodyDouble: {name}"} and not project._open_undo
    assert [what for _, what in ours] == ["Bin.addItem(show)", "Bin.addItem(BodyDouble)",
                                          "Sequence.addTrack(BodyDouble hero take 001)",
                                          "VideoTrack.addTrackItem(BodyDouble hero take 001)"]

    # the clip in the BodyDouble bin: the server's take, numbered after the plate's last frame
    (bd_bin,) = [b for b in project.clipsBin().bins() if b.name() == "BodyDouble"]
    (bin_item,) = bd_bin.clips()
    clip = bin_item.activeItem()
    assert placed.source() is clip and clip.name() == name
    info = clip.mediaSource().fileinfos()[0]
    pattern = info.filename().rsplit(" (", 1)[0]
    assert pattern.endswith(f"takes/{shot}/bodydouble/hero/take_001/{name}.####.exr")
    assert (info.startFrame(), info.endFrame()) == (CUT[1] + 1, CUT[1] + 3)
    take = json.loads((Path(pattern).parent / "take.json").read_text())
    assert take["status"] == "complete" and take["pattern"] == pattern
    assert clip.sourceMediaColourTransform() == "ACEScg"
    for frame in range(CUT[1] + 1, CUT[1] + 4):
        image = oiio.ImageInput.open(expand_pattern(pattern, frame))
        spec = image.spec()
        image.close()
        assert spec.getattribute("bodydouble:operation") == "extend" and spec.getattribute("bodydouble:seed") == 7

    # tagged adapter · seed · take, on the track item and on the clip
    for owner in (placed, clip):
        (tag,) = owner.tags()
        assert tag.name() == "hero · seed 7 · take 001"
        data = tag.metadata().dict()
        assert (data["tag.adapter"], data["tag.seed"], data["tag.take"]) == ("hero", "7", "1")
        assert data["tag.source"] == f"{plate} {CUT[0]}-{CUT[1]}" and "she keeps walking" in tag.note()

    # the request carried the cut's frames, the fps and the colour space
    request = take["request"]
    assert [f["frame"] for f in request["frames"]] == list(range(CUT[0], CUT[1] + 1))
    assert request["count"] == 3 and request["fps"] == 24.0 and request["colorspace"] == "ACEScg"
    task = nuke._progress_tasks[-1]
    assert shot in task.title and task.progress


def test_a_reopened_project_places_the_take_of_a_job_sent_before(on_video_server, studio_app, plate, monkeypatch):
    """The job id rides on the shot as a tag (saved with the project); a project opened again follows the job and
    places its take after the shot."""
    from bodydouble_nuke import hiero_api

    nuke, hiero = studio_app
    kept: list = []
    keep = hiero_api.keep_job
    monkeypatch.setattr(hiero_api, "keep_job", lambda item, values: (kept.append(dict(values)), keep(item, values)))
    _, _, _, item = _edit(hiero, plate)
    _extend_form(nuke)
    hiero._right_click(item.parent().parent(), item)._find(EXTEND).trigger()
    _wait_idle(nuke)
    assert kept and kept[0]["job"].startswith("job-") and item.tags() == ()
    made = item.parent().parent().videoTracks()[-1].items()[0].source().mediaSource().fileinfos()[0].filename()
    # The project as saved while the job ran, opened again after it finished.
    _, sequence, _, again = _edit(hiero, plate, shot=item.name())
    keep(again, kept[0])
    assert [t.name() for t in again.tags()] == ["BodyDouble job"]
    hiero.core.events._send("kAfterProjectLoad", None)
    _wait_idle(nuke)
    assert nuke._messages == [] and again.tags() == ()
    (placed,) = sequence.videoTracks()[-1].items()
    assert placed.source().mediaSource().fileinfos()[0].filename() == made
    assert placed.timelineIn() == again.timelineOut() + 1


def test_a_second_take_keeps_the_first_in_the_bin_and_on_its_track(on_video_server, studio_app, plate):
    nuke, hiero = studio_app
    project, sequence, _, item = _edit(hiero, plate)
    for seed in ("1", "2"):
        _extend_form(nuke, frames="2", seed=seed, adapter="villain")
        hiero._right_click(sequence, item)._find(EXTEND).trigger()
        _wait_idle(nuke)
    assert nuke._messages == []
    (bd_bin,) = [b for b in project.clipsBin().bins() if b.name() == "BodyDouble"]
    assert [b.name() for b in bd_bin.clips()] == [f"{item.name()}_villain_take001", f"{item.name()}_villain_take002"]
    tracks = sequence.videoTracks()
    assert [t.name() for t in tracks] == ["Video 1", "BodyDouble villain take 001", "BodyDouble villain take 002"]
    assert [t.items()[0].tags()[0].name() for t in tracks[1:]] == ["villain · seed 1 · take 001",
                                                                  "villain · seed 2 · take 002"]


def test_cancel_from_the_progress_bar_places_nothing(on_video_server, studio_app, plate):
    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate)
    _extend_form(nuke, frames="8", steps="400")
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    nuke._process_events(until=lambda: bool(nuke._progress_tasks) and bool(nuke._progress_tasks[-1].progress))
    from bodydouble_nuke import commands

    shot = f"  timeline/{item.name()} · job-"
    assert any(line.startswith(shot) for line in commands.jobs_lines()[:3]), "the jobs panel lists it as running"
    nuke._progress_tasks[-1]._press_cancel()
    _wait_idle(nuke)
    assert len(nuke._messages) == 1 and "cancelled" in nuke._messages[0].lower()
    assert len(sequence.videoTracks()) == 1
    assert any(line.startswith(shot) and " · cancelled · " in line for line in commands.jobs_lines())


def test_extend_on_a_server_without_extend_says_so_and_asks_nothing(studio_app, plate, monkeypatch):
    from bodydouble_nuke import commands

    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate)
    real_hello = commands.hello
    monkeypatch.setattr(commands, "hello", lambda address: {**real_hello(address), "operations": ["fill", "train"]})
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    assert "'Extend shot' is not available on this server yet" in nuke._messages[-1]
    assert nuke._forms == [] and len(sequence.videoTracks()) == 1


@pytest.mark.parametrize("times, speed", [((1001, 1002, 1, 4), "2x"), ((1001, 1004, 1.5, 4.5), "1x")])
def test_a_retimed_shot_is_refused_before_anything_is_asked(studio_app, plate, times, speed):
    """Source and timeline durations differ (a speed change) or source times fall between frames (a
    fractional retime): Extend would continue the media, not the shot as the edit plays it."""
    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate)
    item.setTimes(*times)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    assert f"is retimed ({speed} speed)" in nuke._messages[-1] and "un-retimed source clip" in nuke._messages[-1]
    assert nuke._forms == [] and len(sequence.videoTracks()) == 1


def test_server_not_running_is_a_clear_message(studio_app, plate, monkeypatch):
    nuke, hiero = studio_app
    port = free_port()
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", f"tcp://127.0.0.1:{port}")
    _, sequence, _, item = _edit(hiero, plate)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    assert "not running" in nuke._messages[-1] and f":{port}" in nuke._messages[-1]
    assert nuke._forms == []


def test_cancelling_the_form_submits_nothing_and_bad_numbers_ask_again(on_video_server, studio_app, plate):
    from bodydouble_nuke import timeline

    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate)
    nuke._answer_form(None)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    assert timeline._running == {} and nuke._messages == []
    _extend_form(nuke, frames="three")
    nuke._answer_form(None)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    assert nuke._messages == ["BodyDouble: new frames, seed and steps are whole numbers."]
    assert len(nuke._forms) == 3 and timeline._running == {}


def test_media_outside_the_allowed_roots_is_named_as_such(studio_app):
    from bodydouble_nuke import timeline

    nuke, _ = studio_app
    timeline.report(errors.RequestError("'/elsewhere/sh030.1001.exr' is outside the allowed roots",
                                        code="path_not_allowed"), "tcp://x:1")
    assert "may not read this shot's media" in nuke._messages[-1] and "--root" in nuke._messages[-1]
    assert "render folder" not in nuke._messages[-1]


def test_a_shot_outside_the_allowed_roots_is_refused_by_the_server(on_video_server, studio_app, tmp_path):
    from bodydouble_server import samples

    nuke, hiero = studio_app
    outside, _ = samples.write_sequence(tmp_path / "elsewhere", *MEDIA, 32, 32, name="sh030_plate")
    _, sequence, _, item = _edit(hiero, outside)
    _extend_form(nuke)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    _wait_idle(nuke)
    assert "may not read this shot's media" in nuke._messages[-1]
    assert len(sequence.videoTracks()) == 1


@pytest.fixture
def stand_in_extend(tmp_path, monkeypatch):
    """A stand-in BodyDouble server that offers extend, so the whole GUI path (form, worker thread,
    progress bar, main-thread finish, placement) runs today. It speaks the real protocol; its
    "model" copies the plate's last frame into a take folder laid out like the server's."""
    import zmq

    from bodydouble import protocol
    from bodydouble_server import samples

    router = zmq.Context.instance().socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop, submits = threading.Event(), []

    def answer(peer, rid, mtype, body):
        router.send_multipart([peer, *protocol.encode(protocol.Message(type=mtype, id=rid, body=body))])

    def extend(body):
        shot, count = body["shot"], body["count"]
        last = body["frames"][-1]["frame"]
        folder = tmp_path / "takes" / shot / "bodydouble" / "hero" / "take_001"
        pattern, _ = samples.write_sequence(folder, last + 1, last + count, 32, 32, name=f"{shot}_hero_take001")
        return {"job": "job-1", "operation": "extend", "take": 1, "take_dir": str(folder), "pattern": pattern,
                "first": last + 1, "last": last + count, "frames": [], "adapter": "hero", "seed": body["seed"]}

    def serve():
        while not stop.is_set():
            if not router.poll(20):
                continue
            peer, *frames = router.recv_multipart()
            msg = protocol.decode(frames)
            if msg.type == "hello":
                answer(peer, msg.id, "result", {"server": "bodydouble", "protocol": 1, "state": "ready",
                                                "operations": ["extend"], "output_root": str(tmp_path / "takes")})
            elif msg.type == "list_adapters":
                answer(peer, msg.id, "result", {"adapters": [
                    {"name": "hero", "status": "ready", "model_kind": "video"},
                    {"name": "stills", "status": "ready", "model_kind": "image"}]})
            elif msg.type == "submit":
                submits.append(msg.body)
                answer(peer, msg.id, "accepted", {"job": "job-1", "queue_position": 0, "state": "queued"})
                answer(peer, msg.id, "progress", {"job": "job-1", "fraction": 0.5, "message": "step 1/2"})
                answer(peer, msg.id, "result", extend(msg.body))
            else:
                answer(peer, msg.id, "result", {})

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", f"tcp://127.0.0.1:{port}")
    yield submits
    stop.set()
    thread.join(5)
    router.close(linger=0)


def test_extend_through_a_stand_in_server_lands_after_the_shot(studio_app, plate, stand_in_extend, monkeypatch):
    nuke, hiero = studio_app
    project, sequence, track, item = _edit(hiero, plate, shot="sh020")
    before = [(i.timelineIn(), i.timelineOut(), i.sourceIn(), i.sourceOut()) for i in track.items()]
    calls = _spy_main_thread(hiero, monkeypatch)
    _extend_form(nuke, frames="5")
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    _wait_idle(nuke, timeout=60)
    assert nuke._messages == [] and calls == [("bodydouble-hiero-wait", "_accepted"), ("bodydouble-hiero-wait", "_finish")]
    (sent,) = stand_in_extend
    assert [f["frame"] for f in sent["frames"]] == list(range(CUT[0], CUT[1] + 1))
    assert sent["frames"][-1]["plate"]["path"] == expand_pattern(plate, CUT[1])
    assert (sent["count"], sent["seed"], sent["steps"], sent["fps"]) == (5, 7, 2, 24.0)
    assert (sent["shot"], sent["colorspace"], sent["adapters"]) == ("sh020", "ACEScg", [{"name": "hero", "weight": 1.0}])
    assert [(i.timelineIn(), i.timelineOut(), i.sourceIn(), i.sourceOut()) for i in track.items()] == before
    (placed,) = sequence.videoTracks()[1].items()
    assert (placed.timelineIn(), placed.timelineOut()) == (1005, 1009)
    info = placed.source().mediaSource().fileinfos()[0]
    assert (info.startFrame(), info.endFrame()) == (CUT[1] + 1, CUT[1] + 5)
    assert info.filename().endswith("takes/sh020/bodydouble/hero/take_001/sh020_hero_take001.####.exr (1007-1011)")
    assert placed.tags()[0].name() == "hero · seed 7 · take 001"
    assert "hero" in nuke._progress_tasks[-1].title and nuke._progress_tasks[-1].progress == [0, 50]
    assert nuke._forms[-1].fields["adapter"][2] == ["hero"], "image adapters are for Fill, not offered for extend"


# -- placing a take (no server needed) -------------------------------------------------------
def test_placing_takes_never_touches_the_original_track(studio_app, plate, tmp_path):
    from bodydouble_server import samples

    from bodydouble import host
    from bodydouble_nuke import hiero_api, timeline

    _, hiero = studio_app
    project, sequence, track, item = _edit(hiero, plate, shot="sh020")
    shot = timeline.shot_of(hiero_api.read_item(item))
    before = [(i.timelineIn(), i.timelineOut(), i.sourceIn(), i.sourceOut()) for i in track.items()]
    placed = []
    for take in (1, 2):
        pattern, _ = samples.write_sequence(tmp_path / f"take_{take:03d}", 1007, 1010, 32, 32,
                                            name=f"sh020_hero_take{take:03d}")
        record = host.TakeRecord(take=take, adapter="hero", seed=take, operation="extend", pattern=pattern,
                                 first=1007, last=1010, prompt="more")
        placed.append(hiero_api.place_after(item, timeline.placement(shot, record)))
    assert [(i.timelineIn(), i.timelineOut(), i.sourceIn(), i.sourceOut()) for i in track.items()] == before
    assert [(p.timelineIn(), p.timelineOut()) for p in placed] == [(1005, 1008), (1005, 1008)]
    assert [p.parent().name() for p in placed] == ["BodyDouble hero take 001", "BodyDouble hero take 002"]
    bins = [b for b in project.clipsBin().bins() if b.name() == "BodyDouble"]
    assert len(bins) == 1 and [c.name() for c in bins[0].clips()] == ["sh020_hero_take001", "sh020_hero_take002"]
    assert placed[1].tags()[0].metadata().dict()["tag.pattern"].endswith("sh020_hero_take002.####.exr")


# -- colour: a clip's colour transform, read through the project's colour management -------------------
CG = "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1"


@pytest.mark.parametrize("config, colour, sent", [
    (CG, None, "ACEScg"),                                   # the EXR default: 'default (ACEScg)'
    (CG, "scene_linear (ACEScg)", "ACEScg"),                # a role, as Hiero lists it
    (CG, "compositing_log (ACEScct)", "ACEScct"),
    (CG, "data (Raw)", "Raw"),                              # the server reads it as raw (no colour management)
    (CG, "Linear Rec.709 (sRGB)", "Linear Rec.709 (sRGB)"),  # brackets in a colour space's own name
    ("nuke-default", None, "linear"),                       # 'default (linear)'
    ("nuke-default", "scene_linear (linear)", "linear"),
    ("nuke-default", "Cineon", "Cineon"),
])
def test_a_clips_colour_transform_is_resolved_through_the_project(studio_app, plate, config, colour, sent):
    from bodydouble_nuke import hiero_api, timeline

    _, hiero = studio_app
    _, _, _, item = _edit(hiero, plate, colour=colour, config=config)
    shot = timeline.shot_of(hiero_api.read_item(item))
    assert shot.colour_transform == item.sourceMediaColourTransform() and shot.colorspace == sent


def test_roles_resolve_through_the_projects_settings(studio_app, plate):
    """A project whose settings name colour spaces (not roles): a role or a 'default (role)' takes the setting;
    one the project leaves to the config (the .hrox's 'role_…') is sent as the role, for the server's config."""
    from bodydouble_nuke import hiero_api, timeline

    _, hiero = studio_app
    project, _, _, item = _edit(hiero, plate, colour=None)
    colour = hiero_api.read_item(item).project_colour
    assert (colour.config_name, colour.working) == (CG, "role_scene_linear")
    assert timeline.resolve_colour_transform("default (compositing_log)", colour) == "compositing_log"
    project._colour_management(CG, working="ACEScg", log="ACEScct")
    colour = hiero_api.read_item(item).project_colour
    assert timeline.resolve_colour_transform("default (scene_linear)", colour) == "ACEScg"
    assert timeline.resolve_colour_transform("role_compositing_log", colour) == "ACEScct"
    assert timeline.project_root(colour)["OCIO_config"] == CG
    custom = timeline.project_root(hiero_api.ProjectColour("", "/studio/show.ocio", "ACEScg", "", "", "", ""))
    assert (custom["OCIO_config"], custom["customOCIOConfigPath"]) == ("custom", "/studio/show.ocio")


def test_a_nuke_default_project_extends_through_the_server(on_video_server, studio_app, plate):
    """Nuke Studio's nuke-default colour management: the EXR clip's 'default (linear)' is sent as 'linear', which
    the server's ACES config reads as Linear Rec.709; the take's clip gets the shot's colour transform back."""
    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate, colour=None, config="nuke-default")
    assert item.sourceMediaColourTransform() == "default (linear)"
    _extend_form(nuke)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    _wait_idle(nuke)
    assert nuke._messages == []
    (placed,) = sequence.videoTracks()[-1].items()
    pattern = placed.source().mediaSource().fileinfos()[0].filename().rsplit(" (", 1)[0]
    take = json.loads((Path(pattern).parent / "take.json").read_text())
    assert take["status"] == "complete" and take["request"]["colorspace"] == "linear"
    assert placed.source().sourceMediaColourTransform() == "default (linear)"


def test_a_colour_transform_the_server_does_not_know_is_refused_with_the_valid_names(on_video_server, studio_app,
                                                                                     plate):
    """Cineon (nuke-default's log space) has no equivalent in the server's ACES config: unknown_colorspace, in a
    message that names the clip's transform, lists the names the server knows and says what to change."""
    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate, colour="compositing_log (Cineon)", config="nuke-default")
    _extend_form(nuke)
    hiero._right_click(sequence, item)._find(EXTEND).trigger()
    _wait_idle(nuke)
    (message,) = nuke._messages
    assert "does not know the plate's colour space" in message and "'Cineon'" in message
    assert "Valid names:" in message and "ACEScg" in message
    assert "'compositing_log (Cineon)', sent as 'Cineon'" in message and "Media Color Transform" in message
    assert len(sequence.videoTracks()) == 1 and item.tags() == ()


# -- fill: the Node Graph flow on the shot's source --------------------------------------------
def test_fill_opens_the_node_graph_flow_on_the_shots_source(studio_app, plate):
    from bodydouble_nuke import node as bd_node

    nuke, hiero = studio_app
    _, sequence, _, item = _edit(hiero, plate, shot="sh020")
    hiero._right_click(sequence, item)._find(FILL).trigger()
    group = nuke.selectedNode()
    assert bd_node.is_bodydouble(group) and group["operation"].value() == "fill"
    read = group.input(0)
    assert read.Class() == "Read" and read["file"].value() == plate
    assert (read["first"].value(), read["last"].value()) == CUT and read["colorspace"].value() == "ACEScg"
    assert (group["first"].value(), group["last"].value()) == CUT
    assert group.fullName() in nuke._panels and nuke._messages == []


def test_fill_from_the_timeline_offers_both_engines_and_opens_on_video_for_the_cut(on_video_server, plate):
    """Issue #18's pickers in Nuke Studio: the shot's range opens on the video engine where the server has a video
    model and video adapters to pick (the node's own picker, which the timeline's fill opens on)."""
    from bodydouble_nuke import node as bd_node

    nuke, hiero = on_video_server
    _, sequence, _, item = _edit(hiero, plate, shot="sh020")
    hiero._right_click(sequence, item)._find(FILL).trigger()
    group = nuke.selectedNode()
    assert group["engine"].values() == ["image", "video"] and group["engine"].value() == "video"
    assert sorted(bd_node.adapter_names(group).values()) == ["hero", "villain"]
