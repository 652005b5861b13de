"""The command line through a real `bodydouble serve` process, adapter rescans, and the demo."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bodydouble.client import Client
from bodydouble_server import samples

from .support import make_adapters, start_server_process, stop_process


def bd(*args, timeout=120):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "bodydouble", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    adapters = root / "adapters"
    make_adapters(adapters, {"hero": 7})
    plate, mask = samples.write_sequence(root / "sh030" / "plates", 1, 2, 64, 48, name="sh030")
    proc, address = start_server_process(root, adapters, extra=["--resolution", "64"])
    yield {"root": root, "adapters": adapters, "address": address, "plate": plate, "mask": mask}
    log = stop_process(proc)
    assert "Traceback" not in log, log


def test_cli_lists_adapters_and_fills(served):
    listed = bd("adapters", "--server", served["address"], "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["name"] for a in json.loads(listed.stdout)] == ["hero"]
    run = bd("fill", "--server", served["address"], "--plate", served["plate"], "--mask", served["mask"],
             "--frames", "1-2", "--adapter", "hero", "--steps", "2", "--seed", "9", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["first"], out["last"]) == (1, 2)
    assert Path(out["take_dir"]).is_dir() and "100.0%" in run.stderr


def test_cli_reports_errors_clearly(served, tmp_path):
    run = bd("fill", "--server", served["address"], "--plate", served["plate"], "--frames", "1-1",
             "--adapter", "nobody", "--quiet")
    assert run.returncode == 1 and "no adapter named 'nobody'" in run.stderr
    down = bd("adapters", "--server", "tcp://127.0.0.1:9")
    assert down.returncode == 1 and "bodydouble serve --port 9" in down.stderr


def test_rescan_picks_up_new_and_removed_adapters(served):
    with Client(served["address"], timeout=30) as client:
        make_adapters(served["adapters"], {"sidekick": 3})
        names = {a.name: a.status for a in client.rescan()}
        assert names == {"hero": "ready", "sidekick": "ready"}
        shutil.rmtree(served["adapters"] / "sidekick")
        (served["adapters"] / "broken").mkdir()
        (served["adapters"] / "broken" / "manifest.json").write_text("{not json")
        listed = {a.name: a for a in client.rescan()}
        assert set(listed) == {"hero", "broken"} and listed["broken"].status == "invalid"
        assert "manifest.json unreadable" in listed["broken"].reason


def test_demo_runs_end_to_end_on_a_fresh_cache(tmp_path):
    env_cache = tmp_path / "cache"
    env = dict(os.environ, HF_HUB_OFFLINE="1", BODYDOUBLE_CACHE=str(env_cache))
    run = subprocess.run([sys.executable, "-m", "bodydouble", "demo", "--out", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "100.0%" in run.stdout and "take 1:" in run.stdout
    takes = list((tmp_path / "demo" / "takes" / "sh010" / "bodydouble" / "hero_demo").glob("take_001/*.exr"))
    assert len(takes) == 3
    extended = sorted((tmp_path / "demo" / "takes" / "sh010" / "bodydouble" / "hero_demo_video").glob("take_001/*.exr"))
    assert [p.name.split(".")[-2] for p in extended] == [str(f) for f in range(1004, 1012)]
    import OpenImageIO as oiio

    image = oiio.ImageInput.open(str(extended[0]))
    assert image.spec().getattribute("bodydouble:operation") == "extend"
    image.close()
