"""The Nuke flow end to end, against a real server on the embedded model and the fake `nuke`.

Right-click ▸ BodyDouble ▸ Fill unseen angle… → BodyDouble node → Generate → worker thread +
ProgressTask → main-thread queue → Read + Keymix on the server's take. What the fake cannot
prove about a real Nuke is listed in docs/nuke.md.
"""
from __future__ import annotations

import json
import runpy
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from bodydouble.jobspec import expand_pattern

from .support import REPO, fake_nuke_session, free_port

NUKE_DIR = REPO / "host_integration" / "nuke"
FAKE_DIR = REPO / "tests" / "fake_nuke"
FILL = "BodyDouble/Fill unseen angle…"
EXTEND = "BodyDouble/Extend shot…"
CONNECT = "BodyDouble/Connect to server…"


@pytest.fixture
def nuke(server, tmp_path, monkeypatch):
    """A fresh fake Nuke GUI session with the plugin installed as NUKE_PATH would (init.py, menu.py)."""
    with fake_nuke_session(server.bound_address, tmp_path, monkeypatch) as fake:
        yield fake


def _plates(nuke, studio, mask=True):
    plate = nuke.nodes.Read(file=studio["plate"], first=1001, last=1003)
    plate.setXYpos(0, 0)
    matte = nuke.nodes.Read(file=studio["mask"], first=1001, last=1003) if mask else None
    return plate, matte


def _right_click(nuke, path, *selected):
    nuke._select(*selected)                       # the last one given is the one selected last
    nuke.menu("Node Graph").findItem(path).invoke()


def _wait_idle(nuke, timeout=120):
    from bodydouble_nuke import commands

    nuke._process_events(until=lambda: not commands._running, timeout=timeout)


def _own_shot(group) -> str:
    """A shot of this test's own, so take numbers start at 1 whatever ran before on the session server."""
    shot = f"nk_{uuid.uuid4().hex[:8]}"
    group["shot"].setValue(shot)
    return shot


def _take_json(read) -> dict:
    return json.loads((Path(read["file"].value()).parent / "take.json").read_text())


def test_menus_are_installed_in_the_node_graph_and_the_nuke_menu(nuke):
    for menu_name in ("Node Graph", "Nuke"):
        for path in (FILL, EXTEND, CONNECT):
            assert nuke.menu(menu_name).findItem(path) is not None, (menu_name, path)


def test_right_click_fill_generate_brings_back_the_servers_take(nuke, studio):
    import OpenImageIO as oiio

    from bodydouble_nuke import node as bd_node

    plate, matte = _plates(nuke, studio)
    _right_click(nuke, FILL, matte, plate)
    group = nuke.selectedNode()
    assert bd_node.is_bodydouble(group)
    assert group.input(0) is plate and group.input(1) is matte
    assert (group["first"].value(), group["last"].value()) == (1001, 1003)
    assert group["operation"].value() == "fill" and group["shot"].value() == "sh010_plate"
    labels = group["adapter"].values()
    assert any("(hero)" in v for v in labels) and any("(villain)" in v for v in labels)
    assert not any("(foreign)" in v for v in labels), "adapters for another base model are not offered"
    # ... and the node says which it left out and why (an enumeration cannot grey an entry out).
    assert "not offered: foreign (" in group["status"].value()
    assert group.fullName() in nuke._panels
    shot = _own_shot(group)

    bd_node.pick_adapter(group, "hero")
    group["seed"].setValue(7)
    group["steps"].setValue(2)
    group["prompt"].setValue("the left side of her face")
    group["generate"].execute()                   # the button: runs inside the group, like Nuke
    assert nuke._executed, "the inputs were rendered with nuke.execute on the main thread"
    _wait_idle(nuke)
    assert nuke._messages == []

    read = nuke.toNode(f"{group.name()}.hero_take001")
    assert read is not None and read.Class() == "Read"
    take = _take_json(read)
    assert take["status"] == "complete" and take["take"] == 1
    assert read["file"].value() == take["pattern"]
    assert read["file"].value().endswith(f"{shot}/bodydouble/hero/take_001/{shot}_hero_take001.####.exr")
    assert (read["first"].value(), read["last"].value()) == (1001, 1003)
    assert read["label"].value() == "hero · seed 7 · take 001"
    for frame in (1001, 1002, 1003):
        path = expand_pattern(read["file"].value(), frame)
        assert take["frames"][str(frame)] == path and Path(path).is_file()
        image = oiio.ImageInput.open(path)
        spec = image.spec()
        image.close()
        assert spec.getattribute("bodydouble:seed") == 7 and spec.getattribute("bodydouble:adapter") == "hero"
        assert spec.getattribute("bodydouble:take") == 1 and spec.getattribute("bodydouble:frame") == frame
    # what the server read: the plate and mask the temporary Write nodes rendered (and then deleted)
    assert not [n for n in nuke.allNodes() if n.Class() == "Write"]
    # the Write's "default (scene_linear)" resolved through the root's working space (#14)
    assert take["request"]["colorspace"] == "ACEScg"
    assert take["request"]["seed"] == 7 and take["request"]["steps"] == 2

    keymix = nuke.toNode(f"{group.name()}.hero_take001_keymix")
    assert keymix["label"].value() == "hero · seed 7 · take 001"
    with group:
        assert keymix.input(0) is group.node("plate") and keymix.input(1) is read
        assert keymix.input(2) is group.node("mask")
    assert group["take"].value() == "hero · seed 7 · take 001"
    assert "take 001" in group["history"].value()

    # the group's output is the keymix of the take: outside the mask the plate, inside it the take
    out = nuke._pixels(group, 1002)
    take_px = nuke._pixels(read, 1002)
    plate_px = nuke._pixels(plate, 1002)
    mask_px = nuke._pixels(matte, 1002)["rgba.alpha"]
    expected = plate_px["rgba.red"] * (1 - mask_px) + take_px["rgba.red"] * mask_px
    np.testing.assert_allclose(out["rgba.red"], expected, atol=1e-6)

    task = nuke._progress_tasks[-1]
    assert "hero" in task.title and task.progress and max(task.progress) > 0
    assert any("step" in m for m in task.messages)


def test_earlier_takes_stay_selectable_and_untouched(nuke, studio):
    from bodydouble_nuke import node as bd_node

    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, FILL, plate)
    group = nuke.selectedNode()
    assert group.input(1) is None
    _own_shot(group)
    bd_node.pick_adapter(group, "villain")
    group["steps"].setValue(2)
    for seed in (1, 2):
        group["seed"].setValue(seed)
        group["generate"].execute()
        _wait_idle(nuke)
    assert nuke._messages == []
    takes = bd_node.takes(group)
    assert [(t.take, t.seed) for t in takes] == [(1, 1), (2, 2)]
    first, second = (nuke.toNode(f"{group.name()}.{t.node}") for t in takes)
    assert first["label"].value() == "villain · seed 1 · take 001"
    assert "take_001" in nuke.toNode(f"{group.name()}.villain_take001")["file"].value()
    assert "take_002" in nuke.toNode(f"{group.name()}.villain_take002")["file"].value()
    assert group["take"].values() == ["plate (no take)", "villain · seed 1 · take 001", "villain · seed 2 · take 002"]
    assert group["take"].value() == "villain · seed 2 · take 002"
    with group:
        switch = group.node("takes")
        assert switch["which"].value() == 2
        group["take"].setValue("villain · seed 1 · take 001")
        assert switch["which"].value() == 1 and switch.input(1) is first and switch.input(2) is second
        # no mask input: the keymix masks through the plate's alpha
        assert first.input(2) is group.node("plate")
    # the plate's own alpha was the mask the server used
    assert json.loads((Path(takes[0].take_dir) / "take.json").read_text())["status"] == "complete"


def test_cancel_from_the_progress_bar_cancels_on_the_server(nuke, studio):
    from bodydouble_nuke import commands
    from bodydouble_nuke import node as bd_node

    plate, matte = _plates(nuke, studio)
    _right_click(nuke, FILL, matte, plate)
    group = nuke.selectedNode()
    shot = _own_shot(group)
    bd_node.pick_adapter(group, "hero")
    group["steps"].setValue(400)
    group["generate"].execute()
    nuke._process_events(until=lambda: bool(nuke._progress_tasks) and bool(nuke._progress_tasks[-1].progress))
    nuke._progress_tasks[-1]._press_cancel()
    _wait_idle(nuke)
    assert len(nuke._messages) == 1 and "cancelled" in nuke._messages[0].lower()
    assert bd_node.takes(group) == [] and group["status"].value() == "cancelled"
    assert not commands._running
    takes_dir = Path(studio["root"]) / "takes" / shot / "bodydouble" / "hero"
    statuses = [json.loads((d / "take.json").read_text())["status"] for d in takes_dir.iterdir()]
    assert statuses == ["cancelled"], "the server stopped the job and marked its take cancelled"


def test_cancel_button_cancels_too(nuke, studio):
    from bodydouble_nuke import node as bd_node

    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, FILL, plate)
    group = nuke.selectedNode()
    bd_node.pick_adapter(group, "hero")
    group["steps"].setValue(400)
    group["generate"].execute()
    nuke._process_events(until=lambda: bool(nuke._progress_tasks) and bool(nuke._progress_tasks[-1].progress))
    group["cancel"].execute()
    _wait_idle(nuke)
    assert "cancelled" in nuke._messages[-1].lower() and bd_node.takes(group) == []


def test_server_not_running_is_a_clear_message_and_renders_nothing(nuke, studio, monkeypatch):
    port = free_port()
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", f"tcp://127.0.0.1:{port}")
    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, FILL, plate)
    group = nuke.selectedNode()
    assert "not running" in nuke._messages[-1] and "Connect to server" in nuke._messages[-1]
    assert "Refresh" in group["status"].value()
    group["bd_adapters"].setValue(json.dumps({"Hero (hero) · x": "hero"}))
    group["adapter"].setValues(["Hero (hero) · x"])
    group["generate"].execute()
    assert "not running" in nuke._messages[-1] and f":{port}" in nuke._messages[-1]
    assert nuke._executed == []


def test_unknown_adapter_is_reported(nuke, studio):
    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, FILL, plate)
    group = nuke.selectedNode()
    group["bd_adapters"].setValue(json.dumps({"Ghost (ghost) · sd15": "ghost"}))
    group["adapter"].setValues(["Ghost (ghost) · sd15"])
    group["steps"].setValue(2)
    group["generate"].execute()
    _wait_idle(nuke)
    assert "no adapter 'ghost'" in nuke._messages[-1] and "Refresh adapters" in nuke._messages[-1]


@pytest.fixture(scope="module")
def video_server(studio, tmp_path_factory):
    """A server on the embedded test models whose adapters folder holds a video adapter (extend) and an image one."""
    from bodydouble_server.config import ServerConfig

    from .support import make_adapters, make_video_adapters, server_thread

    adapters = tmp_path_factory.mktemp("nuke_video_adapters")
    make_adapters(adapters, {"hero": 7})
    make_video_adapters(adapters, {"hero_video": 3})
    config = ServerConfig(port=0, roots=[str(studio["root"])], adapters=str(adapters),
                          output_root=str(studio["root"] / "takes"), resolution=64, video_resolution=64, video_window=9)
    with server_thread(config) as srv:
        yield srv


def test_right_click_extend_brings_back_frames_after_the_plate(nuke, studio, video_server, monkeypatch):
    import OpenImageIO as oiio

    from bodydouble_nuke import node as bd_node

    monkeypatch.setenv("BODYDOUBLE_ADDRESS", video_server.bound_address)
    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, EXTEND, plate)
    group = nuke.selectedNode()
    assert group["operation"].value() == "extend" and nuke._messages == []
    # Extend runs on the server's video model: only the adapter trained for it is offered.
    [label] = group["adapter"].values()
    assert "(hero_video)" in label
    shot = _own_shot(group)
    bd_node.pick_adapter(group, "hero_video")
    group["count"].setValue(4)
    group["seed"].setValue(5)
    group["steps"].setValue(2)
    group["generate"].execute()
    _wait_idle(nuke, timeout=240)
    assert nuke._messages == []

    read = nuke.toNode(f"{group.name()}.hero_video_take001")
    take = _take_json(read)
    assert take["status"] == "complete" and take["operation"] == "extend"
    assert read["file"].value() == take["pattern"] and f"/{shot}/bodydouble/hero_video/take_001/" in take["pattern"]
    assert (read["first"].value(), read["last"].value()) == (1004, 1007)     # numbering continues the plate's
    assert read["label"].value() == "hero_video · seed 5 · take 001"
    assert nuke.toNode(f"{group.name()}.hero_video_take001_keymix") is None  # new frames: nothing to key over
    merge = nuke.toNode(f"{group.name()}.hero_video_take001_after_plate")
    assert merge.Class() == "Merge2" and merge["operation"].value() == "over" and read["before"].value() == "black"
    for frame in range(1004, 1008):
        spec = oiio.ImageInput.open(expand_pattern(read["file"].value(), frame))
        attrs = spec.spec()
        spec.close()
        assert attrs.getattribute("bodydouble:operation") == "extend" and (attrs.width, attrs.height) == (96, 64)
        assert attrs.getattribute("bodydouble:conditioning_frames") == "1003"
    assert group["take"].value() == "hero_video · seed 5 · take 001"
    # The node plays one continuous shot: the plate up to its last frame, then the new frames.
    for frame, source in ((1002, plate), (1003, plate), (1004, read), (1007, read)):
        np.testing.assert_array_equal(nuke._pixels(group, frame)["rgba.red"], nuke._pixels(source, frame)["rgba.red"])


def test_extend_says_plainly_when_the_server_cannot(nuke, studio, monkeypatch):
    """A server without a video model (video_model = none) does not offer extend."""
    from bodydouble_nuke import commands
    from bodydouble_nuke import node as bd_node

    real_hello = commands.hello
    monkeypatch.setattr(commands, "hello", lambda address: {**real_hello(address), "operations": ["fill", "train"]})
    monkeypatch.setattr(commands, "refresh_adapters", lambda group, address, operation="fill":
                        bd_node.set_adapters(group, {"Hero (hero) · x": "hero"}))
    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, EXTEND, plate)
    group = nuke.selectedNode()
    assert group["operation"].value() == "extend"
    bd_node.pick_adapter(group, "hero")
    group["generate"].execute()
    assert "'Extend shot' is not available on this server yet" in nuke._messages[-1]
    assert nuke._executed == [], "refused before rendering anything"


def test_protocol_mismatch_is_reported(nuke, studio, monkeypatch):
    """A server from a newer protocol answers hello with protocol_mismatch."""
    import zmq

    from bodydouble import protocol

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if router.poll(50):
                peer, *frames = router.recv_multipart()
                rid = json.loads(frames[1])["id"]
                reply = protocol.Message(type="error", id=rid, body={
                    "code": "protocol_mismatch",
                    "message": "peer speaks BodyDouble protocol 1; this side speaks 2. Update the older of the "
                               "plugin and the server."})
                router.send_multipart([peer, *protocol.encode(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("BODYDOUBLE_ADDRESS", f"tcp://127.0.0.1:{port}")
        plate, _ = _plates(nuke, studio, mask=False)
        _right_click(nuke, FILL, plate)
        assert "different protocol versions" in nuke._messages[-1]
        assert "protocol 1; this side speaks 2" in nuke._messages[-1]
    finally:
        stop.set()
        thread.join(5)
        router.close(linger=0)


def test_connect_to_server_dialog_remembers_the_address(nuke, server, tmp_path, monkeypatch):
    from bodydouble_nuke import settings

    monkeypatch.setenv("BODYDOUBLE_ADDRESS", "tcp://127.0.0.1:1")
    nuke._answer(server.bound_address)
    nuke.menu("Nuke").findItem(CONNECT).invoke()
    assert nuke._messages[-1].startswith(f"BodyDouble: connected to {server.bound_address}")
    assert "adapter(s) ready" in nuke._messages[-1]
    assert settings.address() == server.bound_address
    assert json.loads((tmp_path / "prefs.json").read_text())["address"] == server.bound_address
    nuke._answer(None)                                   # Cancel: nothing changes
    nuke.menu("Nuke").findItem(CONNECT).invoke()
    assert settings.address() == server.bound_address and len(nuke._messages) == 1


def test_worker_thread_never_touches_nuke_directly(nuke, studio, monkeypatch):
    """Every nuke call the glue makes during a job happens on the main thread (the fake enforces
    it for messages, nodes, knobs and execute); the worker only uses ProgressTask and the queue."""
    from bodydouble_nuke import node as bd_node

    calls = []
    original = nuke.executeInMainThread

    def spy(call, args=(), kwargs=None):
        calls.append((threading.current_thread().name, call.__name__))
        return original(call, args, kwargs)

    monkeypatch.setattr(nuke, "executeInMainThread", spy)
    plate, _ = _plates(nuke, studio, mask=False)
    _right_click(nuke, FILL, plate)
    group = nuke.selectedNode()
    bd_node.pick_adapter(group, "hero")
    group["steps"].setValue(2)
    group["generate"].execute()
    _wait_idle(nuke)
    assert {thread for thread, _ in calls} == {"bodydouble-nuke-wait"}
    names = [name for _, name in calls]
    assert names[0] == "_accepted_in_main_thread" and names[-1] == "_finish_in_main_thread"
    assert set(names[1:-1]) <= {"_show_preview_in_main_thread"}
    assert bd_node.takes(group)


def test_terminal_mode_loads_init_only_and_generates_synchronously(server, studio, tmp_path, monkeypatch):
    """`nuke -t` / farm: init.py must load without UI; generate blocks, returns the take, raises on errors."""
    for path in (str(FAKE_DIR), str(NUKE_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import nuke

    nuke._reset(gui=False)
    monkeypatch.setenv("BODYDOUBLE_ADDRESS", server.bound_address)
    monkeypatch.setenv("BODYDOUBLE_NUKE_PREFS", str(tmp_path / "prefs.json"))
    runpy.run_path(str(NUKE_DIR / "init.py"))       # the fake's menu() raises in terminal mode: none was called
    import bodydouble_nuke as bd
    from bodydouble_nuke.commands import NukeJobError

    plate = nuke.nodes.Read(file=studio["plate"], first=1001, last=1002)
    group = bd.create_node(plate)
    bd.pick_adapter(group, "hero")
    group["steps"].setValue(2)
    group["seed"].setValue(3)
    take = bd.generate(group)
    assert take is not None and take.label.startswith("hero · seed 3 · take ")
    read = nuke.toNode(f"{group.name()}.{take.node.replace('_keymix', '')}")
    assert read["file"].value() == take.pattern and (read["first"].value(), read["last"].value()) == (1001, 1002)
    assert nuke._progress_tasks == [] and nuke._messages == []

    group["bd_adapters"].setValue(json.dumps({"Ghost (ghost) · x": "ghost"}))
    group["adapter"].setValues(["Ghost (ghost) · x"])
    with pytest.raises(NukeJobError, match="no adapter 'ghost'") as info:
        bd.generate(group)
    assert info.value.cause.code == "unknown_adapter"
    nuke._reset(gui=True)
