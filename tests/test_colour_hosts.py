"""Each host's default colour space, accepted end to end (#14), through a real server on the passthrough model.

- Nuke (the fake, whose colorspace knobs accept only the names of the OCIO config the script uses — nuke-default
  as a real OCIO config file beside the fake, or OCIO's own built-in ACES config): Nuke colour management's
  Write default "default (linear)" is sent as "linear"; OCIO's "default (scene_linear)" as the root's working
  space (ACEScg). The server resolves both; the take is the plate inside the mask (tolerance as in
  tests/test_colour_passthrough.py: 2e-3 relative, the crop generated at its own size).
- Blender (real bpy 4.5): an EXR plate keeps Blender's default "Linear Rec.709"; Fill sends it; same check.
- Connect in Nuke says when the script's OCIO config is not the server's.
"""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from .blender_scripts.launcher import blender_python, run_script
from .support import NUKE_DIR, fake_nuke_session, server_thread

FILL, CONNECT = "BodyDouble/Fill unseen angle…", "BodyDouble/Connect to server…"
H, W = 96, 128
MASK = (slice(32, 64), slice(40, 72))      # 32x32, context 0.5 -> a 64x64 crop = the model's size
FRAME = 1001


def _read(path) -> np.ndarray:
    return np.asarray(oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A linear Rec.709 plate (overbrights to ~8, random alpha), its mask, and a passthrough server with an
    adapter 'hero' (hosts make the artist pick one; the passthrough model ignores it)."""
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.models import testing

    root = tmp_path_factory.mktemp("colour-hosts")
    plates = root / "shots" / "sh010" / "plates"
    plates.mkdir(parents=True)
    rng = np.random.default_rng(7)
    pixels = np.ones((H, W, 4), np.float32)
    luminance = np.exp(rng.uniform(np.log(0.005), np.log(6.0), (H, W, 1)))
    pixels[..., :3] = luminance * (1.0 + 0.3 * rng.uniform(-1.0, 1.0, (H, W, 3)))
    pixels[..., 3] = rng.uniform(0.2, 1.0, (H, W))
    samples.write_exr(plates / f"sh010_plate.{FRAME}.exr", pixels, ("R", "G", "B", "A"))
    mask = np.zeros((H, W, 4), np.float32)
    mask[MASK] = 1.0
    samples.write_exr(plates / f"sh010_mask.{FRAME}.exr", mask, ("R", "G", "B", "A"))
    config = ServerConfig(port=0, model="test:passthrough", video_model="none", resolution=64, roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"))
    engine = Engine(config)
    engine.load()
    testing.test_adapter(Path(config.adapters) / "hero", engine.identity, "Hero", 1)
    with server_thread(config) as srv:
        yield {"root": root, "address": srv.bound_address, "plate": str(plates / "sh010_plate.####.exr"),
               "mask": str(plates / "sh010_mask.####.exr"), "plate_file": str(plates / f"sh010_plate.{FRAME}.exr"),
               "mask_file": str(plates / f"sh010_mask.{FRAME}.exr")}


def _check_take(take_dir: Path, plate_file: str) -> dict:
    take = json.loads((take_dir / "take.json").read_text())
    out, plate = _read(take["frames"][str(FRAME)]), _read(plate_file)
    inside = np.zeros((H, W), bool)
    inside[MASK] = True
    assert np.array_equal(out[~inside], plate[~inside])
    error = np.abs(out[inside][:, :3] - plate[inside][:, :3])
    assert np.all(error <= 2e-3 * np.maximum(plate[inside][:, :3], 1.0)), float(error.max())
    return take


# -- Nuke ----------------------------------------------------------------------------------------
@pytest.fixture
def nuke(studio, tmp_path, monkeypatch):
    with fake_nuke_session(studio["address"], tmp_path, monkeypatch) as fake:
        yield fake


def _nuke_fill(nuke, studio) -> dict:
    from bodydouble_nuke import commands
    from bodydouble_nuke import node as bd_node

    plate = nuke.nodes.Read(file=studio["plate"], first=FRAME, last=FRAME)
    matte = nuke.nodes.Read(file=studio["mask"], first=FRAME, last=FRAME)
    nuke._select(matte, plate)
    nuke.menu("Node Graph").findItem(FILL).invoke()
    group = nuke.selectedNode()
    group["shot"].setValue(f"nk_{uuid.uuid4().hex[:8]}")
    bd_node.pick_adapter(group, "hero")
    group["steps"].setValue(1)
    group["generate"].execute()
    nuke._process_events(until=lambda: not commands._running, timeout=120)
    assert nuke._messages == []
    read = next(n for n in nuke.allNodes(group=group) if n.Class() == "Read")
    return _check_take(Path(read["file"].value()).parent, studio["plate_file"])


def test_nuke_default_colour_management_is_accepted(nuke, studio):
    nuke._colour_management("Nuke")
    write = nuke.nodes.Write()
    assert write["colorspace"].value() == "default (linear)"
    with pytest.raises(ValueError):                  # not a name of nuke-default: refused, as Nuke does
        write["colorspace"].setValue("ACEScg")
    nuke.delete(write)
    take = _nuke_fill(nuke, studio)
    assert take["request"]["colorspace"] == "linear"


def test_nuke_ocio_working_space_is_sent_for_the_scene_linear_role(nuke, studio):
    nuke._colour_management("OCIO", "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1")
    write = nuke.nodes.Write()
    assert write["colorspace"].value() == "default (scene_linear)"
    with pytest.raises(ValueError):
        write["colorspace"].setValue("linear")
    nuke.delete(write)
    take = _nuke_fill(nuke, studio)
    assert take["request"]["colorspace"] == "ACEScg"


def test_nuke_roles_and_defaults_resolve_through_the_root():
    sys.path.insert(0, str(NUKE_DIR))
    from bodydouble_nuke import flow

    ocio = {"colorManagement": "OCIO", "OCIO_config": "custom", "customOCIOConfigPath": "/studio/config.ocio",
            "workingSpaceLUT": "ACES - ACEScg", "floatLut": "default (scene_linear)", "logLut": "ACEScct"}
    assert flow.resolve_colorspace("default (scene_linear)", ocio) == "ACES - ACEScg"
    assert flow.resolve_colorspace("default (default)", ocio) == "ACES - ACEScg"    # float default -> role -> space
    assert flow.resolve_colorspace("compositing_log", ocio) == "ACEScct"
    assert flow.resolve_colorspace("default (data)", ocio) == "raw"
    assert flow.host_colour(ocio).config == "/studio/config.ocio"
    nuke_mode = {"colorManagement": "Nuke", "workingSpaceLUT": "linear", "floatLut": "linear"}
    assert flow.resolve_colorspace("default (linear)", nuke_mode) == "linear"
    assert flow.host_colour(nuke_mode).config == "nuke-default"
    assert flow.host_colour({"colorManagement": "OCIO", "OCIO_config": "fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1"}
                            ).config == "ocio://cg-config-v1.0.0_aces-v1.3_ocio-v2.1"


def test_nuke_connect_says_when_the_scripts_config_is_not_the_servers(nuke, studio):
    nuke._colour_management("Nuke")
    nuke._answer(studio["address"])
    nuke.menu("Nuke").findItem(CONNECT).invoke()
    assert "not the server's (ocio://default)" in nuke._messages[-1] and "nuke-default" in nuke._messages[-1]
    nuke._colour_management("OCIO", "ocio://default")           # a custom config: the server's own
    assert nuke.root()["workingSpaceLUT"].value() == "ACEScg"
    nuke._answer(studio["address"])
    nuke.menu("Nuke").findItem(CONNECT).invoke()
    assert "Colour:" not in nuke._messages[-1] and "connected to" in nuke._messages[-1]


# -- Blender -------------------------------------------------------------------------------------
def test_blender_default_linear_rec709_is_accepted(studio, tmp_path):
    result = run_script(blender_python(), "colour_fill.py", dict(
        address=studio["address"], frame=FRAME, out=str(tmp_path), plate_first_file=studio["plate_file"],
        matte_first_file=studio["mask_file"]))
    assert result["image_colorspace"] == "Linear Rec.709"
    assert result["fill"] == {"result": ["FINISHED"], "error": None}, result["_output"][-2000:]
    assert result["take"] is not None, (result["reports"], result["_output"][-3000:])
    take = _check_take(Path(result["take"]["take_dir"]), studio["plate_file"])
    assert take["request"]["colorspace"] == "Linear Rec.709"
    assert (result["take"]["display"], result["take"]["view"]) == (result["display"], result["view"])
    # Refresh says that Blender's own config is not the server's, and what the model sees instead.
    assert "Colour: this Blender's own config is not the server's (ocio://default)" in result["_output"]


def test_doctor_compares_this_workstations_ocio_with_the_servers(studio, monkeypatch):
    from bodydouble.client import Client
    from bodydouble_server.workstation import doctor

    with Client(studio["address"], timeout=10) as client:
        info = client.server_info
    assert info["colour"]["config"] == "ocio://default" and info["colour"]["scene_linear"] == "ACEScg"
    monkeypatch.delenv("OCIO", raising=False)
    assert doctor.check_colour(info).status == "OK"
    monkeypatch.setenv("OCIO", "ocio://default")
    assert doctor.check_colour(info).status == "OK"
    monkeypatch.setenv("OCIO", "/studio/ocio/show.ocio")
    check = doctor.check_colour(info)
    assert check.status == "WARN" and "/studio/ocio/show.ocio" in check.detail and "ocio://default" in check.detail
