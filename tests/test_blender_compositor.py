"""The BodyDouble Blender extension in real Blender (bpy 4.5 and bpy 5.0, headless) against a real server.

Each Blender session is a subprocess of the bpy venv's Python with a timeout (a bpy process
can hang at exit); its script prints one JSON result that these tests check. The server is a
real `bodydouble serve` process on the embedded test model, one per module.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from .blender_scripts.launcher import BLENDERS, blender_python, run_script
from .support import free_port, make_adapters, make_video_adapters, start_server_process, stop_process

FIRST, LAST = 1001, 1003


@pytest.fixture(scope="module", params=sorted(BLENDERS))
def bpy_python(request):
    """Every test here runs once per supported Blender (its own venv)."""
    return blender_python(request.param)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, bpy_python):
    from bodydouble_server import samples

    root = tmp_path_factory.mktemp("blender-studio")
    make_adapters(root / "adapters", {"hero": 7})
    make_video_adapters(root / "adapters", {"hero_video": 3})
    plate, mask = samples.write_sequence(root / "shots" / "sh010" / "plates", FIRST, LAST, 96, 64)
    return {"root": root, "plate": plate, "mask": mask}


@pytest.fixture(scope="module")
def address(studio):
    proc, addr = start_server_process(studio["root"], studio["root"] / "adapters", extra=["--resolution", "64", "--video-resolution", "64", "--video-window", "9"])
    yield addr
    stop_process(proc)


def script_args(studio, address, out: Path, python: str, **extra) -> dict:
    """The scripts' arguments; each Blender's takes go to their own folder (numbers start at take 001 in each)."""
    blender = Path(python).parents[2].name          # its venv: .venv-blender, .venv-blender5
    return dict(address=address, first=FIRST, last=LAST, out=str(out),
                output_root=str(studio["root"] / "takes" / blender.lstrip(".")),
                plate_first_file=studio["plate"].replace("####", str(FIRST)),
                matte_first_file=studio["mask"].replace("####", str(FIRST)), **extra)


def read_exr(path) -> np.ndarray:
    import OpenImageIO as oiio

    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    return buf.get_pixels(oiio.FLOAT)


def exr_attribute(path, name):
    import OpenImageIO as oiio

    return oiio.ImageBuf(str(path)).spec().getattribute(name)


def frame_file(pattern: str, frame: int) -> str:
    return pattern.replace("####", f"{frame:04d}")


# -- the artist's loop -------------------------------------------------------------------------------
def test_fill_from_compositor_context_menu(bpy_python, studio, address, tmp_path):
    r = run_script(bpy_python, "fill_compositor.py", script_args(studio, address, tmp_path, bpy_python))

    # Right-click menus: BodyDouble in the compositor's node editor and the sequencer, not in shader editors.
    assert r["appended"] == {"NODE_MT_context_menu": True, "SEQUENCER_MT_context_menu": True}
    assert r["menu_compositor"] == ["---", "menu:NODE_MT_bodydouble"]
    assert r["menu_shader"] == []
    assert r["menu_sequencer"] == ["---", "menu:SEQUENCER_MT_bodydouble"]
    assert r["submenu_plate"] == ["op:bodydouble.fill:Fill Unseen Angle…"]
    # The adapter picker shows character and base model, filled from the server.
    assert r["refresh"]["result"] == ["FINISHED"]
    [[name, label]] = r["adapter_items"]
    assert name == "hero" and label.startswith("Hero · bodydouble-embedded")

    # The operator returns at once; the job runs in the background and progress reaches the UI.
    assert r["fill"] == {"result": ["FINISHED"], "error": None}
    assert r["jobs_after_submit"] == 1
    # (the last step's 1.0 may come in the same pump as the result, which ends the job: not required here)
    assert r["progress"] == sorted(r["progress"]) and r["progress"][-1] >= 0.5 and len(r["progress"]) >= 4
    assert any("frame 1002" in s for s in r["status_seen"])
    assert r["status_menu_while_running"][0].startswith("progress:BodyDouble: Fill hero 1001-1003")
    assert r["status_menu_while_running"][1] == "op:bodydouble.cancel:"

    take1 = r["take1"]
    props = take1["props"]
    pattern = props["pattern"]
    # The new Image node: the take's EXR sequence, same timing as the plate, labelled adapter · seed · take.
    assert take1["bl_idname"] == "CompositorNodeImage" and take1["source"] == "SEQUENCE"
    assert take1["filepath"] == frame_file(pattern, FIRST)
    assert (take1["frame_start"], take1["frame_offset"], take1["frame_duration"]) == (FIRST, FIRST - 1, 3)
    assert take1["label"] == "hero · 7 · take 001"
    assert props["take"] == 1 and props["take_first"] == FIRST and props["take_last"] == LAST
    for frame in range(FIRST, LAST + 1):
        assert Path(frame_file(pattern, frame)).is_file()
    assert Path(pattern).parent == Path(props["take_dir"])
    # What made it, for Regenerate / New seed.
    assert {k: props[k] for k in ("adapter", "seed", "prompt", "steps", "strength", "first", "last", "mask_source")} == {
        "adapter": "hero", "seed": 7, "prompt": "a face, side view", "steps": 2, "strength": 1.0,
        "first": FIRST, "last": LAST, "mask_source": "ALPHA"}
    assert props["plate"] == studio["plate"] and props["mask"] == "" and props["source_node"] == "Plate"
    assert exr_attribute(frame_file(pattern, FIRST), "bodydouble:seed") in (7, "7")
    # Placed beside (below) the plate, selected, and wired in where the plate was.
    assert take1["location"][0] == r["plate_after"]["location"][0]
    assert take1["location"][1] < r["plate_after"]["location"][1]
    assert take1["active"] and take1["selected"]
    assert take1["feeds"] == ["Composite", "Viewer"] and r["plate_after"]["feeds"] == []
    assert take1["composite_from"] == take1["name"]
    # The take node's right-click menu offers Regenerate and New seed.
    assert "op:bodydouble.regenerate:Regenerate" in r["submenu_take"]
    assert "op:bodydouble.regenerate:New Seed" in r["submenu_take"]
    assert "op:bodydouble.carry_take:Carry Through Shot…" in r["submenu_take"]      # a fill take: key a shot

    # Pixels read back through Blender's compositor (take node -> Composite, rendered per frame) are the
    # EXRs the server wrote, frame for frame; and they are not simply the plate.
    for frame, rendered in r["renders_take1"].items():
        blender = read_exr(rendered)
        server = read_exr(frame_file(pattern, int(frame)))
        np.testing.assert_allclose(blender, server, atol=1e-6)
        assert np.abs(server - read_exr(frame_file(studio["plate"], int(frame)))).max() > 1e-3

    # Regenerate: a new take with the same parameters; the old node and its files are untouched.
    take2 = r["take2"]
    assert r["regenerate"]["result"] == ["FINISHED"]
    assert take2["props"]["take"] == 2 and take2["props"]["seed"] == 7 and take2["label"] == "hero · 7 · take 002"
    assert take2["props"]["take_dir"] != props["take_dir"]
    assert take2["location"][1] < take1["location"][1]
    for key in ("name", "label", "filepath", "props", "frame_start", "frame_offset", "frame_duration", "location"):
        assert r["take1_after"][key] == take1[key], key
    assert r["take1_files_after"] == r["take1_files_before"]
    np.testing.assert_allclose(read_exr(frame_file(take2["props"]["pattern"], FIRST)),
                               read_exr(frame_file(pattern, FIRST)), atol=1e-3)  # same seed, same pixels
    # New seed: another take, another seed, shown in its label.
    take3 = r["take3"]
    assert r["newseed"]["result"] == ["FINISHED"]
    assert take3["props"]["take"] == 3 and take3["props"]["seed"] != 7
    assert take3["label"] == f"hero · {take3['props']['seed']} · take 003"
    assert take3["composite_from"] == take3["name"]

    # Mask from a second selected Image node, and a frame range other than the node's.
    take4 = r["take4"]
    assert r["fill_matte"]["result"] == ["FINISHED"]
    assert take4["props"]["mask_source"] == "NODE" and take4["props"]["mask"] == studio["mask"]
    assert (take4["props"]["first"], take4["props"]["last"]) == (FIRST + 1, FIRST + 1)
    assert (take4["frame_start"], take4["frame_offset"], take4["frame_duration"]) == (FIRST + 1, FIRST, 1)
    assert not [rep for rep in r["reports"] if rep[0] == "ERROR"]


# -- cancel and errors -------------------------------------------------------------------------------
def test_cancel_mid_job_loads_nothing(bpy_python, studio, address, tmp_path):
    r = run_script(bpy_python, "cancel_job.py", script_args(studio, address, tmp_path, bpy_python, steps_long=60))
    assert r["fill"]["result"] == ["FINISHED"]
    assert r["cancel_poll_idle"] is False and r["cancel_poll_running"] is True
    assert 0 < r["fraction_at_cancel"] < 1
    assert r["cancel"]["result"] == ["FINISHED"]
    assert r["seconds_to_stop"] < 20
    assert r["nodes_added"] == [] and r["images_added"] == []
    assert r["composite_from"] == "Plate"
    assert r["status_line"] == ""
    assert any(level == "WARNING" and "cancelled" in msg for level, msg in r["reports"]), r["reports"]
    assert Path(r["render"][str(FIRST)]).is_file()


class _OtherProtocolServer:
    """A peer that answers every request the way a server of another protocol version does."""

    def __init__(self):
        import zmq

        from bodydouble import errors, protocol

        self.address = f"tcp://127.0.0.1:{free_port()}"
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.bind(self.address)
        self._stop = threading.Event()

        def serve():
            while not self._stop.is_set():
                if not self._sock.poll(50):
                    continue
                ident, *frames = self._sock.recv_multipart()
                rid = protocol.peek_id(frames)
                exc = errors.ProtocolMismatch("server speaks BodyDouble protocol 2; this client speaks 1. "
                                              "Update the older of the plugin and the server.")
                self._sock.send_multipart([ident, *protocol.encode(protocol.error_message(rid, exc))])

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close(0)
        self._ctx.term()


def test_errors_are_reported_and_blender_stays_usable(bpy_python, studio, address, tmp_path):
    other = _OtherProtocolServer()
    try:
        r = run_script(bpy_python, "error_reports.py", script_args(
            studio, address, tmp_path, bpy_python, down_address=f"tcp://127.0.0.1:{free_port()}", mismatch_address=other.address))
    finally:
        other.close()

    # Server down: the dialog refuses at once with how to start the server.
    assert r["refresh_down"]["result"] == ["CANCELLED"]
    assert "server is not running" in r["refresh_down"]["error"] and "bodydouble serve" in r["refresh_down"]["error"]
    assert r["refresh_down_seconds"] < 5
    # With no adapter list (headless Blender runs EXEC, not the dialog): refused, saying why.
    assert r["invoke_down"]["result"] == ["CANCELLED"] and "is the server running" in r["invoke_down"]["error"]
    [(level, msg)] = [rep for rep in r["fill_down"]["reports"]]
    assert level == "ERROR" and "server is not running" in msg and "bodydouble serve" in msg
    assert r["fill_down"]["seconds"] < 10

    [(level, msg)] = r["fill_mismatch"]["reports"]
    assert level == "ERROR" and "protocol mismatch" in msg and "protocol 2" in msg

    [(level, msg)] = r["fill_unknown"]["reports"]
    assert level == "ERROR" and msg.startswith("Unknown adapter") and "nobody" in msg

    assert r["nodes_added"] == 0
    assert Path(r["render"][str(FIRST)]).is_file()
    assert r["fill_ok"]["reports"][-1][0] == "INFO" and "take 00" in r["fill_ok"]["reports"][-1][1]
    assert r["nodes_added_after_ok"] == 1


def test_sequencer_extend_runs_on_the_video_model_and_continues_the_strip(bpy_python, studio, address, tmp_path):
    r = run_script(bpy_python, "sequencer_extend.py", script_args(studio, address, tmp_path, bpy_python))
    assert r["menu"] == ["---", "menu:SEQUENCER_MT_bodydouble"]
    assert r["submenu"] == ["op:bodydouble.extend:Extend Shot…"]
    assert r["frame_inputs"] == [[f, frame_file(studio["plate"], f)] for f in range(FIRST, LAST + 1)]
    # Extend offers the video adapter only (fill, the image one): an image adapter cannot even be picked.
    assert r["extend_items"] == ["hero_video"] and r["fill_items"] == ["hero"]
    assert 'enum "hero" not found' in r["image_adapter_for_extend"]

    assert r["extend"]["result"] == ["FINISHED"] and r["running"] == 1     # returned at once, job in the background
    assert [rep for rep in r["reports"] if rep[0] != "INFO"] == []
    # The take becomes an image strip right after the source, same channel, frame numbers continuing.
    [strip] = r["new_strip"]
    src = r["source_strip"]
    assert strip["type"] == "IMAGE" and strip["channel"] == src["channel"]
    assert strip["frame_start"] == src["frame_end"] == LAST + 1 and strip["frame_end"] == LAST + 5
    files = [Path(strip["directory"]) / f for f in strip["files"]]
    assert [int(f.name.split(".")[-2]) for f in files] == [LAST + 1, LAST + 2, LAST + 3, LAST + 4]
    assert all(f.is_file() and f.is_relative_to(studio["root"] / "takes") for f in files)
    assert exr_attribute(files[0], "bodydouble:operation") == "extend"
    assert exr_attribute(files[0], "bodydouble:adapter") == "hero_video"
    props = strip["props"]
    assert props["take_first"] == LAST + 1 and props["take_last"] == LAST + 4
    assert props["adapter"] == "hero_video" and props["seed"] == 5 and props["count"] == 4
    assert props["source_strip"] == "Plate"
    # The sequencer's BodyDouble tab lists the take strip (with its thumbnail) and the finished job.
    panel = r["panel"]
    takes = panel[panel.index("label:Takes [RENDERLAYERS]") + 1:]
    assert takes[0].startswith("icon:") and takes[2] == f"  name={strip['name']}"
    assert f"label:Extend Plate +4: finished [CHECKMARK]" in panel
    pixels = read_exr(files[-1])
    assert pixels.shape == (64, 96, 4) and np.isfinite(pixels).all() and pixels[..., :3].std() > 0


@pytest.fixture(scope="module")
def curve_server(studio, tmp_path_factory):
    """The same studio behind an encrypted server that admits one artist's certificate."""
    import zmq.auth

    from bodydouble import curve

    keys = tmp_path_factory.mktemp("curve-keys")
    allowed = keys / "allowed"
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(keys, "server")
    artist_public, artist_secret = zmq.auth.create_certificates(keys, "artist")
    (allowed / "artist.key").write_bytes(Path(artist_public).read_bytes())
    with pytest.MonkeyPatch.context() as env:   # the readiness check in start_server_process connects with them
        env.setenv(curve.SERVER_CERT_ENV, str(server_public))
        env.setenv(curve.CLIENT_CERT_ENV, str(artist_secret))
        proc, addr = start_server_process(studio["root"], studio["root"] / "adapters", extra=[
            "--resolution", "64", "--curve-certificate", str(server_secret), "--curve-clients", str(allowed)])
    yield {"address": addr, "server_cert": str(server_public), "client_cert": str(artist_secret), "keys": keys}
    stop_process(proc)


def test_a_remote_encrypted_server_with_certificates_from_the_preferences(bpy_python, studio, curve_server, tmp_path):
    r = run_script(bpy_python, "remote_server.py", script_args(
        studio, curve_server["address"], tmp_path, bpy_python, server_cert=curve_server["server_cert"],
        client_cert=curve_server["client_cert"], missing_cert=str(curve_server["keys"] / "nope.key")))
    assert r["plain"]["result"] == ["CANCELLED"] and r["missing"]["result"] == ["CANCELLED"]
    [(level, message)] = r["missing_reports"]
    assert level == "ERROR" and "connection settings" in message and "nope.key" in message
    assert r["refresh"]["result"] == ["FINISHED"] and "hero" in r["adapters"]
    assert r["fill"]["result"] == ["FINISHED"] and r["nodes_added"] == 1
    assert r["reports"][-1][0] == "INFO" and "take 00" in r["reports"][-1][1]


# -- what the artist sees of jobs: panel, messages, preview, undo, File > Open, re-attach -----------------------
def test_jobs_panel_messages_preview_undo_and_reattach_after_reopening(bpy_python, studio, address, tmp_path):
    """One Blender session (jobs_flow.py); every pump there runs without a window, as a timer does."""
    r = run_script(bpy_python, "jobs_flow.py", script_args(studio, address, tmp_path, bpy_python,
                                                           down_address=f"tcp://127.0.0.1:{free_port()}"), timeout=240)
    one, three = f"Fill hero {FIRST}-{FIRST}", f"Fill hero {FIRST}-{LAST}"

    # A constructed preview is shown right side up (Blender's rows run bottom-up), display-referred.
    assert r["constructed"] == {"size": [6, 4], "bottom": [0.0, 0.0, 1.0], "top": [1.0, 0.0, 0.0], "colorspace": "sRGB"}

    # Two jobs: the server runs one and queues the other; the panel shows both, each with its own cancel.
    assert r["states"] == {"a": "running", "b": "queued", "b_ahead": 1}
    keys = r["keys"]
    panel = r["panel_two_jobs"]
    assert panel[panel.index(f"label:{one} [PLAY]") + 1:][:2] == ["op:bodydouble.cancel:", f"  job={keys['a']}"]
    assert panel[panel.index(f"label:{three} [SORTTIME]") + 1:][:3] == [
        "op:bodydouble.cancel:", f"  job={keys['b']}", "label:queued, 1 ahead"]
    assert r["records_two"] == sorted(r["job_ids"].values())      # both ids are in the scene (re-attach)
    # Cancel the queued one only: the other keeps running.
    assert r["cancel_b"]["result"] == ["FINISHED"] and r["a_after_cancel_b"] == "running"
    assert r["history_after_cancel"] == [[three, "cancelled"]]
    assert r["records_after_cancel"] == [r["job_ids"]["a"]]

    # The server's live preview lands in the "BodyDouble Preview" image and the panel's icon, pixel for pixel.
    live = r["live"]
    assert live["equal"] and live["image_size"] == live["icon_size"] == live["shape"][1::-1]
    assert live["title"] == one
    assert f"label:Preview: {one} [IMAGE_DATA]" in r["panel_preview"]
    assert "label:Image Editor: 'BodyDouble Preview'" in r["panel_preview"]

    # Loaded from a windowless pump: the artist is told (panel, status bar), not just the console.
    [take] = r["takes_after_a"]
    loaded = [m for m in r["messages_after_a"] if m[0] == "INFO" and f"loaded as '{take}'" in m[1]]
    assert loaded and r["status_after_a"] == [f"label:{loaded[0][1]} [INFO]"]
    assert f"label:{one}: finished [CHECKMARK]" in r["panel_after_a"]
    assert f"label:{loaded[0][1]} [INFO]" in r["panel_after_a"]
    assert r["records_after_a"] == []
    # Take history with its thumbnail (Blender's thumbnailer, from the take's first frame).
    takes = r["panel_after_a"][r["panel_after_a"].index("label:Takes [RENDERLAYERS]"):]
    assert takes[1].startswith("icon:") and takes[2].startswith("op:bodydouble.show_take:hero · 1 · take ")
    assert r["thumbnail"]["size"][0] > 0 and r["thumbnail"]["mean"] > 0.01
    # The take has its own undo step: Ctrl+Z after the artist's next change undoes that change, not the take.
    assert r["after_undo"] == {"takes": [take], "plate_label": "Plate"}

    # A failed job: an ERROR the panel and the status bar show.
    level, text = r["last_message"]
    assert level == "ERROR" and "nobody" in text
    assert r["status_after_failure"] == [f"label:{text} [CANCEL]"]
    assert r["history_after_failure"][-1] == [f"Fill nobody {FIRST}-{LAST}", "failed"]

    # File > Open while a job runs: the job is let go (it finishes on the server), nothing lands in the new file.
    assert r["running_after_open"] == 0
    assert r["open_message"][0] == "WARNING" and "open the file again" in r["open_message"][1]
    assert r["c_server_state"] == "complete"
    other = r["other_file"]
    assert other["takes"] == [] and other["records"] == [] and set(other["images"]) <= {"Render Result"}
    # Reopening the saved .blend follows the job again and loads the take it finished meanwhile.
    [c_id] = r["reattached"]
    assert [job for _, job in r["shot_takes"]].count(c_id) == 1 and r["shot_records"] == []
    # A job still running when its file is reopened is followed on to its end and loaded once.
    d = r["d"]
    assert d["followed_id"] == d["id"] and d["fraction_at_detach"] < 1.0 and d["max_fraction_followed"] > d["fraction_at_detach"]
    assert d["takes"] == 1 and r["d_takes_after_again"] == 1
    assert r["again"][0] == "INFO" and "already loaded" in r["again"][1]
    # A server that does not answer: the job is "lost", stays in the file, and the panel offers Re-attach.
    lost = r["lost"]
    assert r["reattach_down"]["result"] == ["FINISHED"]
    assert lost["history"] == "lost" and lost["records"] == ["job-gone-1"]
    assert lost["message"][0] == "WARNING" and "Re-attach" in lost["message"][1]
    assert "op:bodydouble.reattach:Re-attach" in lost["panel"]
    assert "label:1 job(s) of this file not followed [UNLINKED]" in lost["panel"]
