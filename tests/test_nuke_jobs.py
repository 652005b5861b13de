"""Artists see it working, in Nuke (#15): the live preview beside the BodyDouble node, the job id kept in the script
and re-attached when the script opens again (a finished job's take loaded, a running one followed, one the server
forgot reported), and the jobs panel (queue position, running, ended, per-job cancel, takes). Against a real server
on the embedded model and the fake `nuke` (which refuses Nuke calls off the main thread)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bodydouble import host
from bodydouble.client import Client
from bodydouble.jobspec import FillRequest, sequence_frames

from .support import fake_nuke_session

FILL = "BodyDouble/Fill unseen angle…"


@pytest.fixture
def nuke(server, tmp_path, monkeypatch):
    with fake_nuke_session(server.bound_address, tmp_path, monkeypatch) as fake:
        yield fake


def _node(nuke, studio, steps=2, shot="nkj"):
    from bodydouble_nuke import node as bd_node

    plate = nuke.nodes.Read(file=studio["plate"], first=1001, last=1003)
    nuke._select(plate)
    nuke.menu("Node Graph").findItem(FILL).invoke()
    group = nuke.selectedNode()
    bd_node.pick_adapter(group, "hero")
    group["steps"].setValue(steps)
    group["shot"].setValue(shot)
    return group


def _wait(nuke, until, timeout=120):
    nuke._process_events(until=until, timeout=timeout)


def _idle(nuke):
    from bodydouble_nuke import commands

    _wait(nuke, lambda: not commands._running)


def _kept_jobs(monkeypatch) -> list[str]:
    """Every value the glue writes into a node's 'bd_job' knob (what a script saved at that moment would hold)."""
    from bodydouble_nuke import node as bd_node

    kept = []
    original = bd_node.set_pending

    def spy(group, *args, **kwargs):
        original(group, *args, **kwargs)
        kept.append(group["bd_job"].value())

    monkeypatch.setattr(bd_node, "set_pending", spy)
    return kept


def test_the_live_preview_shows_beside_the_node_and_the_job_is_kept_until_it_ends(nuke, studio, monkeypatch):
    import OpenImageIO as oiio

    kept = _kept_jobs(monkeypatch)
    group = _node(nuke, studio, steps=3)
    group["generate"].execute()
    _idle(nuke)
    assert nuke._messages == []
    take = group.node("hero_take001")
    assert take is not None
    saved = json.loads(kept[0])
    assert saved["job"] == json.loads((Path(take["file"].value()).parent / "take.json").read_text())["job"]
    assert saved["params"]["adapter"] == "hero" and saved["address"]
    assert group["bd_job"].value() == "", "an ended job is no longer waited for"
    preview = nuke.toNode(f"{group.name()}_preview")
    assert preview is not None and preview.Class() == "Read" and preview.input(0) is None
    path = Path(preview["file"].value())
    assert path.suffix == ".png" and path.parent.name == "preview" and path.is_file()
    pixels = oiio.ImageBuf(str(path)).get_pixels(oiio.UINT8)
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and max(pixels.shape[:2]) <= 128
    assert not [p for p in path.parent.iterdir() if ".bdtmp" in p.name], "written atomically"


def test_a_reopened_script_loads_the_take_of_a_job_that_finished_meanwhile(nuke, studio, monkeypatch):
    kept = _kept_jobs(monkeypatch)
    first = _node(nuke, studio, shot="nkj_reopen")
    first["generate"].execute()
    _idle(nuke)
    done = first.node("hero_take001")["file"].value()
    # The script as saved while the job ran, opened again: a node whose 'bd_job' names the job.
    again = _node(nuke, studio, shot="nkj_reopen")
    again["bd_job"].setValue(kept[0])
    nuke._script_loaded()
    _idle(nuke)
    assert nuke._messages == []
    read = again.node("hero_take001")
    assert read is not None and read["file"].value() == done
    assert again["bd_job"].value() == "" and "ready" in again["status"].value()
    again["reattach"].execute()                 # nothing left to re-attach to: nothing happens
    assert not again.node("hero_take002")


def _submitted_elsewhere(server, studio, steps) -> tuple[str, host.Params]:
    """A job sent by an earlier Nuke session (which then went away): its id and the node's parameters."""
    params = host.Params(operation="fill", adapter="hero", seed=3, steps=steps, first=1001, last=1002,
                         shot="nkj_follow", plate=studio["plate"], mask=studio["mask"])
    with Client(server.bound_address, timeout=30) as client:
        job = client.submit(params.request())
        return job.accepted(timeout=30), params


def test_a_reopened_script_follows_a_job_still_running(nuke, server, studio):
    from bodydouble_nuke import commands
    from bodydouble_nuke import node as bd_node

    job_id, params = _submitted_elsewhere(server, studio, steps=40)
    group = _node(nuke, studio, shot="nkj_follow")
    bd_node.set_pending(group, job_id, server.bound_address, params, "")
    nuke._script_loaded()
    key = group.fullName()
    assert commands._running[key].job.follow == job_id
    _idle(nuke)
    assert nuke._messages == []
    takes = bd_node.takes(group)
    assert [t.job for t in takes] == [job_id] and takes[0].seed == 3
    assert group.node(takes[0].node) is not None and group["bd_job"].value() == ""


def test_a_job_the_server_no_longer_knows_is_reported(nuke, server, studio):
    from bodydouble_nuke import node as bd_node

    group = _node(nuke, studio)
    bd_node.set_pending(group, "job-gone-1", server.bound_address, host.Params(operation="fill", adapter="hero"), "")
    group["reattach"].execute()
    _idle(nuke)
    assert len(nuke._messages) == 1 and "no longer knows this job" in nuke._messages[0]
    assert group["bd_job"].value() == "" and bd_node.takes(group) == []


def test_the_jobs_panel_shows_the_queue_and_cancels_one_job(nuke, studio):
    from bodydouble_nuke import commands

    long = _node(nuke, studio, steps=400, shot="nkj_panel")
    short = _node(nuke, studio, steps=2, shot="nkj_panel")
    long["generate"].execute()
    short["generate"].execute()
    running = commands._running
    _wait(nuke, lambda: all(r.job.job_id for r in running.values()) and running[long.fullName()].job.fraction > 0)
    nuke._answer_form({"_button": "Close"})
    assert commands.jobs_command() == "Close"
    text = nuke._forms[-1].fields[""][1]
    long_id, short_id = running[long.fullName()].job.job_id, running[short.fullName()].job.job_id
    assert f"{long.fullName()} · {long_id} · running" in text
    assert f"{short.fullName()} · {short_id} · queued, 1 ahead" in text
    assert nuke._forms[-1].fields["job"][2] == [f"{long.fullName()}:{long_id}", f"{short.fullName()}:{short_id}"]

    nuke._answer_form({"_button": "Cancel job", "job": f"{short.fullName()}:{short_id}"})
    commands.jobs_command()
    _wait(nuke, lambda: short.fullName() not in running)
    assert long.fullName() in running and short["status"].value() == "cancelled"
    nuke._answer_form({"_button": "Cancel job", "job": f"{long.fullName()}:{long_id}"})
    commands.jobs_command()
    _idle(nuke)
    lines = commands.jobs_lines()
    assert f"  {long.fullName()} · {long_id} · cancelled · " in "\n".join(lines)
    assert any(line.startswith(f"  {short.fullName()} · {short_id} · cancelled") for line in lines)
    assert f"  {long.fullName()}: (none yet)" in lines
    assert nuke._messages and all(m.startswith("BodyDouble: cancelled") for m in nuke._messages)


def test_a_server_that_does_not_answer_keeps_the_job_for_later(nuke, server, studio):
    from bodydouble_nuke import node as bd_node

    from .support import free_port

    group = _node(nuke, studio)
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    bd_node.set_pending(group, "job-later-7", nowhere, host.Params(operation="fill", adapter="hero"), "")
    group["reattach"].execute()
    _idle(nuke)
    assert len(nuke._messages) == 1 and "not running" in nuke._messages[0]
    assert bd_node.pending(group)["job"] == "job-later-7" and "press Re-attach" in group["status"].value()


def test_a_forgotten_job_whose_take_is_complete_on_disk_is_loaded(nuke, studio, monkeypatch):
    """The server restarted after it finished the take (it no longer knows the job id): the take.json it left under
    the shot names the job, so re-attaching loads that take."""
    kept = _kept_jobs(monkeypatch)
    first = _node(nuke, studio, shot="nkj_disk")
    first["generate"].execute()
    _idle(nuke)
    read = first.node("hero_take001")
    take_json = Path(read["file"].value()).parent / "take.json"
    data = json.loads(take_json.read_text())
    data["job"] = "job-previous-run-4"                 # as a server of an earlier run wrote it
    take_json.write_text(json.dumps(data))
    saved = json.loads(kept[0])
    saved["job"] = "job-previous-run-4"
    again = _node(nuke, studio, shot="nkj_disk")
    again["bd_job"].setValue(json.dumps(saved))
    again["reattach"].execute()
    _idle(nuke)
    assert nuke._messages == []
    loaded = again.node("hero_take001")
    assert loaded is not None and loaded["file"].value() == read["file"].value()
    assert (loaded["first"].value(), loaded["last"].value()) == (1001, 1003) and again["bd_job"].value() == ""
