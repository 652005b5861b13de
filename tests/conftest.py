import os
from pathlib import Path

import pytest

# No model hub, ever: an accidental download fails at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One embedded-model cache for the whole run (built once, a few MB)."""
    if "BODYDOUBLE_CACHE" not in os.environ:
        os.environ["BODYDOUBLE_CACHE"] = str(tmp_path_factory.mktemp("bodydouble-cache"))
    yield


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    """A studio-like tree: an allowed root with plates, an adapters folder with two adapters."""
    from bodydouble_server import samples

    from .support import make_adapters

    root = tmp_path_factory.mktemp("studio")
    adapters = root / "adapters"
    make_adapters(adapters, {"hero": 7, "villain": 11})
    # An adapter trained on some other base model: listed, never loaded, refused by name.
    foreign = adapters / "foreign"
    if not foreign.exists():
        import json
        import shutil

        shutil.copytree(adapters / "hero", foreign)
        manifest = json.loads((foreign / "manifest.json").read_text())
        manifest["base_model"] = {"name": "some-other-sd15-inpaint", "sha256": "0" * 64, "family": "sd15"}
        (foreign / "manifest.json").write_text(json.dumps(manifest))
    plate, mask = samples.write_sequence(root / "shots" / "sh010" / "plates", 1001, 1003, 96, 64)
    return {"root": root, "adapters": adapters, "plate": plate, "mask": mask}


@pytest.fixture(scope="session")
def server(studio):
    """A real server on a background thread: real ROUTER socket on a free loopback port, real tiny pipeline."""
    from bodydouble_server.config import ServerConfig

    from .support import server_thread

    config = ServerConfig(port=0, roots=[str(studio["root"])], adapters=str(studio["adapters"]),
                          output_root=str(studio["root"] / "takes"), resolution=64)
    with server_thread(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    from bodydouble.client import Client

    with Client(server.bound_address, timeout=30) as c:
        yield c
