"""``bodydouble doctor`` on a healthy set-up, with the server down, a broken adapter, an unwritable output root,
a GPU left unused by a CPU torch: each finding on its own line with its fix."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bodydouble_server.workstation.doctor import diagnose

from .support import REPO, free_port, make_adapters, make_video_adapters

INSTALL = REPO / "installer" / "install.py"


def by_what(checks) -> dict:
    return {c.what: c for c in checks}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A workstation installed by the installer (offline, this venv as the server env), a server on its config."""
    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig

    root = tmp_path_factory.mktemp("doctor")
    home = root / "home"
    home.mkdir()
    adapters, takes = root / "studio" / "adapters", root / "studio" / "takes"
    make_adapters(adapters, {"hero": 7})
    make_video_adapters(adapters, {"hero_video": 3})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "BLENDER", "NUKE_PATH"))}
    env.update(HOME=str(home), BLENDER_USER_RESOURCES=str(home / "blender-user"))
    proc = subprocess.run([sys.executable, str(INSTALL), "--server-python", sys.executable, "--offline", "--no-blender",
                           "--nuke-python", "3.11", "--port", str(port), "--adapters", str(adapters),
                           "--output-root", str(takes)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The Blender extension as Blender unpacks it (the real install is tests/test_installer.py's).
    ext = home / "blender-user" / "extensions" / "user_default" / "bodydouble"
    ext.mkdir(parents=True)
    shutil.copy(REPO / "host_integration" / "blender" / "bodydouble_blender" / "blender_manifest.toml", ext)
    config = home / ".config" / "bodydouble" / "server.toml"
    server, thread = start_in_thread(ServerConfig.load(config, resolution=64))
    from bodydouble.client import Client

    with Client(server.bound_address, timeout=60) as client:
        client.wait_ready()
    yield {"home": home, "env": env, "config": config, "adapters": adapters, "server": server, "root": root}
    server.stop()
    thread.join(10)


@pytest.fixture
def workstation(setup, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("XDG_", "BLENDER", "NUKE_PATH", "BODYDOUBLE_NVIDIA_SMI", "BODYDOUBLE_PYTHONPATH")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(setup["home"]))
    monkeypatch.setenv("BLENDER_USER_RESOURCES", str(setup["home"] / "blender-user"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")   # no nvidia-smi: this machine has no GPU
    return setup


def test_healthy(workstation):
    checks = by_what(diagnose(workstation["config"], None, 10))
    assert not [c for c in checks.values() if c.status == "FAIL"], [c.line() for c in checks.values()]
    assert checks["server"].status == "OK" and "protocol 1, ready" in checks["server"].detail
    assert checks["adapter hero"].status == "OK"
    assert checks["output root"].status == "OK" and "writable" in checks["output root"].detail
    assert checks["python"].status == "OK" and "pyzmq" in checks["python"].detail
    assert checks["config"].status == "OK"
    assert checks["blender extension"].status == "OK" and "version 0.1.0" in checks["blender extension"].detail
    assert checks["nuke plugin"].status == "OK" and "pyzmq for Nuke 16" in checks["nuke plugin"].detail
    # Honest warnings on this machine: the embedded test model, no GPU. Each with a fix.
    assert checks["base model"].status == "WARN" and "model =" in checks["base model"].fix
    assert checks["video model"].status == "WARN" and "TEST video model" in checks["video model"].detail
    assert "video_model =" in checks["video model"].fix
    assert checks["gpu"].status == "WARN" and checks["gpu"].fix


def test_cli_exit_status_and_json(workstation):
    env = dict(os.environ)
    ok = subprocess.run([sys.executable, "-m", "bodydouble", "doctor"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = [line for line in ok.stdout.splitlines() if line.strip()]
    assert all(line.split()[0] in ("OK", "WARN", "FAIL") for line in lines[:-1]) and "warning" in lines[-1]
    assert any(line.startswith("WARN  gpu") and "-> fix:" in line for line in lines)
    down = subprocess.run([sys.executable, "-m", "bodydouble", "doctor", "--json", "--server", f"tcp://127.0.0.1:{free_port()}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 1
    checks = {c["what"]: c for c in json.loads(down.stdout)}
    assert checks["server"]["status"] == "FAIL" and set(checks["server"]) == {"status", "what", "detail", "fix"}


def test_server_down(workstation):
    checks = by_what(diagnose(workstation["config"], f"tcp://127.0.0.1:{free_port()}", 2))
    server = checks["server"]
    assert server.status == "FAIL" and "no BodyDouble server answers" in server.detail
    assert f"bodydouble serve --config {workstation['config']}" in server.fix
    # Model and adapters are still judged, here, with the server's own code.
    assert checks["adapter hero"].status == "OK" and checks["adapter hero_video"].status == "OK"
    assert checks["base model"].status == "WARN" and "TEST model" in checks["base model"].detail
    assert checks["video model"].status == "WARN" and "TEST video model" in checks["video model"].detail


@pytest.mark.parametrize("setting", ["missing", "not_video", "none"])
def test_video_model_setting(workstation, tmp_path, setting):
    """Judged locally (server down): a missing folder and an image model are FAILs with the fix; none is fine."""
    from bodydouble_server.models import embedded

    value = {"missing": str(tmp_path / "no-such-wan"), "not_video": str(embedded.embedded_model_path()),
             "none": "none"}[setting]
    config = tmp_path / "server.toml"
    config.write_text(workstation["config"].read_text() + f"video_model = {json.dumps(value)}\n")
    checks = by_what(diagnose(config, f"tcp://127.0.0.1:{free_port()}", 2))
    video = checks["video model"]
    if setting == "none":
        assert video.status == "OK" and "no extend" in video.detail
        return
    assert video.status == "FAIL" and "video_model =" in video.fix
    assert ("not a readable diffusers folder" if setting == "missing" else "known video family") in video.detail
    assert checks["adapter hero"].status == "OK"     # the image side is judged as before


def test_systemd_unit_changes_the_start_hint(workstation):
    unit = workstation["home"] / ".config" / "systemd" / "user" / "bodydouble.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    try:
        checks = by_what(diagnose(workstation["config"], f"tcp://127.0.0.1:{free_port()}", 2))
    finally:
        unit.unlink()
    assert checks["server"].fix.startswith("systemctl --user start bodydouble")


def test_broken_and_foreign_adapters(workstation):
    from bodydouble.client import Client

    adapters = workstation["adapters"]
    broken, foreign = adapters / "broken", adapters / "foreign"
    shutil.copytree(adapters / "hero", broken)
    (broken / "manifest.json").write_text(json.dumps({"character": "Broken"}))
    shutil.copytree(adapters / "hero", foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["base_model"] = {"name": "other-sd15", "sha256": "0" * 64, "family": "sd15"}
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    with Client(workstation["server"].bound_address, timeout=60) as client:
        client.rescan()
    try:
        for address in (None, f"tcp://127.0.0.1:{free_port()}"):   # asked of the server, then judged locally
            checks = by_what(diagnose(workstation["config"], address, 10))
            assert checks["adapter broken"].status == "FAIL" and "manifest.json lacks" in checks["adapter broken"].detail
            assert f"repair or remove {broken}" in checks["adapter broken"].fix
            assert checks["adapter foreign"].status == "FAIL" and "other-sd15" in checks["adapter foreign"].detail
            assert "retrain" in checks["adapter foreign"].fix
            assert checks["adapter hero"].status == "OK"
    finally:
        shutil.rmtree(broken)
        shutil.rmtree(foreign)
        with Client(workstation["server"].bound_address, timeout=60) as client:
            client.rescan()


def test_unwritable_output_root(workstation, tmp_path):
    if os.geteuid() == 0:   # root writes through permission bits: use a folder no one can create files in
        locked = Path("/proc/self")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
    config = tmp_path / "server.toml"
    text = workstation["config"].read_text()
    config.write_text("\n".join(line for line in text.splitlines() if not line.startswith(("output_root", "roots")))
                      + f"\noutput_root = {json.dumps(str(locked))}\nroots = [{json.dumps(str(locked))}]\n")
    check = by_what(diagnose(config, None, 10))["output root"]
    assert check.status == "FAIL" and "not writable" in check.detail
    assert "output_root" in check.fix
    assert by_what(diagnose(workstation["config"], None, 10))["output root"].status == "OK"   # the real one


def test_gpu_present_but_cpu_torch(workstation, tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\nif [ -n "$1" ]; then echo "NVIDIA RTX A6000, 570.86.15, 49140, 47000"; '
                    'else echo "| NVIDIA-SMI 570.86.15  Driver Version: 570.86.15  CUDA Version: 12.8 |"; fi\n')
    fake.chmod(0o755)
    monkeypatch.setenv("BODYDOUBLE_NVIDIA_SMI", str(fake))
    gpu = by_what(diagnose(workstation["config"], None, 10))["gpu"]
    assert gpu.status == "FAIL" and "RTX A6000" in gpu.detail and "45.9 of 48.0 GiB free" in gpu.detail
    assert "CPU build" in gpu.detail and "installer/install.py" in gpu.fix


def test_hosts_missing(workstation, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BLENDER_USER_RESOURCES", str(tmp_path / "blender"))
    checks = by_what(diagnose(workstation["config"], None, 10))
    assert checks["blender extension"].status == "WARN" and "install" in checks["blender extension"].fix
    assert checks["nuke plugin"].status == "WARN" and "NUKE_PATH" in checks["nuke plugin"].fix
