"""installer/install.py into a temporary HOME: what it writes, an idempotent re-run, --uninstall leaving nothing.

The server environment is this test venv (--server-python) so no test reinstalls torch; host wheels come from it
too (--offline). Blender is the real bpy 4.5 behind a `blender` command that runs Blender's own extension CLI.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .blender_scripts.launcher import REPO, SCRIPTS, blender_python, run_script

sys.path.insert(0, str(REPO / "installer"))
from bodydouble_install import server_env, torch_build  # noqa: E402
from bodydouble_install.record import Record  # noqa: E402

from bodydouble_server.workstation.gpus import parse_nvidia_smi  # noqa: E402
from bodydouble_server.workstation.locations import NUKE_BEGIN, NUKE_END  # noqa: E402

INSTALL = REPO / "installer" / "install.py"
USER_INIT = "# the studio's own Nuke start-up\nimport nuke\nnuke.pluginAddPath('/studio/nuke')"   # no final newline
# Caches other tools keep in any HOME they run under (pip, rustup's settings); not the installer's doing.
TOOL_CACHES = {".cache", ".rustup"}


def installer_env(home: Path, fake_bin: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "BLENDER", "NUKE_PATH", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), BLENDER_USER_RESOURCES=str(home / "blender-user"), HF_HUB_OFFLINE="1",
               PATH=f"{fake_bin}{os.pathsep}{env['PATH']}", XDG_RUNTIME_DIR=str(home / "run"))
    return env


def run_installer(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(INSTALL), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def snapshot(home: Path) -> dict[str, str]:
    """Every path under HOME (but tool caches) with its content hash; the zip is rebuilt each run, so only named."""
    out = {}
    for p in sorted(home.rglob("*")):
        rel = p.relative_to(home)
        if rel.parts[0] in TOOL_CACHES or "__pycache__" in rel.parts or rel.parts[0] == "blender-user":
            continue
        out[str(rel)] = "dir" if p.is_dir() else ("zip" if p.suffix == ".zip" else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """One install with Blender found, a user session bus (fake systemctl) and a user's own ~/.nuke/init.py."""
    blender_py = blender_python()
    root = tmp_path_factory.mktemp("installer")
    home, fake_bin = root / "home", root / "bin"
    (home / ".nuke").mkdir(parents=True)
    (home / ".nuke" / "init.py").write_text(USER_INIT)
    (home / "run").mkdir()
    (home / "run" / "bus").write_text("")
    fake_bin.mkdir()
    blender = fake_bin / "blender"
    blender.write_text(f"#!/bin/sh\nexec {blender_py} {SCRIPTS / 'blender_cli.py'} \"$@\"\n")
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(f"#!/bin/sh\necho \"$@\" >> {root / 'systemctl.log'}\n")
    for exe in (blender, systemctl):
        exe.chmod(0o755)
    before = snapshot(home)
    env = installer_env(home, fake_bin)
    args = ["--server-python", sys.executable, "--offline", "--service", "--port", "5599",
            "--adapters", str(home / "studio" / "adapters"), "--output-root", str(home / "studio" / "takes")]
    first = run_installer(env, *args)
    return {"home": home, "env": env, "args": args, "first": first, "before": before, "root": root,
            "after_first": snapshot(home)}


def test_writes_config_unit_launcher_and_manifest(installed):
    home = installed["home"]
    config = home / ".config" / "bodydouble" / "server.toml"
    data = tomllib.loads(config.read_text())
    assert data == {"host": "127.0.0.1", "port": 5599, "adapters": str(home / "studio" / "adapters"),
                    "roots": [str(home / "studio" / "takes")], "output_root": str(home / "studio" / "takes"),
                    "device": "auto", "dtype": "auto"}
    from bodydouble_server.config import ServerConfig

    assert ServerConfig.load(config).model is None   # the server's own reader takes it: embedded test model
    assert (home / "studio" / "adapters").is_dir() and (home / "studio" / "takes").is_dir()
    unit = (home / ".config" / "systemd" / "user" / "bodydouble.service").read_text()
    assert f'ExecStart="{sys.executable}" "-m" "bodydouble" "serve" "--config" "{config}"' in unit
    assert "Environment=HF_HUB_OFFLINE=1" in unit and "WantedBy=default.target" in unit
    log = (installed["root"] / "systemctl.log").read_text().splitlines()
    assert log[:2] == ["--user daemon-reload", "--user enable --now bodydouble.service"]
    launcher = home / ".local" / "bin" / "bodydouble"
    assert os.access(launcher, os.X_OK) and f"exec {sys.executable} -m bodydouble" in launcher.read_text()
    manifest = json.loads((home / ".config" / "bodydouble" / "install.json").read_text())
    assert str(config) in manifest["files"] and manifest["actions"]["service"] == {"unit": "bodydouble.service"}
    assert manifest["actions"]["blender"]["package"] == "user_default.bodydouble"


def test_nuke_plugin_and_init_block(installed):
    home = installed["home"]
    nuke_base = home / ".local" / "share" / "bodydouble" / "nuke"
    init = (home / ".nuke" / "init.py").read_text()
    assert init.startswith(USER_INIT + "\n" + NUKE_BEGIN)
    assert init.count(NUKE_BEGIN) == 1 and init.count(NUKE_END) == 1
    assert f"nuke.pluginAddPath({str(nuke_base / 'plugin')!r})" in init
    assert (nuke_base / "plugin" / "menu.py").is_file() and (nuke_base / "plugin" / "bodydouble_nuke" / "flow.py").is_file()
    # Offline: pyzmq for this Python's ABI only (Nuke 16 = 3.11); the others are printed as commands to run.
    assert (nuke_base / "site-3.11" / "zmq" / "__init__.py").is_file()
    assert not (nuke_base / "site-3.9" / "zmq").exists()
    assert f"--target {nuke_base / 'site-3.9'}" in installed["first"].stdout
    # The copied init.py (what Nuke runs) finds the client built for the Python it runs in, with no other path.
    code = ("import sys; sys.modules['nuke'] = type(sys)('nuke'); exec(open(sys.argv[1]).read()); "
            "import zmq, bodydouble, os; print(zmq.__file__); print(bodydouble.__file__); "
            "print(os.environ['BODYDOUBLE_ADDRESS'])")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(nuke_base / "plugin" / "init.py")],
                         capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    zmq_file, client_file, address = out.stdout.split()
    assert zmq_file.startswith(str(nuke_base / "site-3.11")) and client_file.startswith(str(nuke_base / "site-3.11"))
    assert address == "tcp://127.0.0.1:5599"


HIERO_START = """
import json, os, sys
sys.path.insert(0, sys.argv[1])             # the fake hiero / nuke modules
import hiero, hiero.core.find_plugins as loader    # Foundry's loader, as the fake mirrors it
loader.findPlugins()                        # ~/.nuke/Python/Startup/*.py, then each added path's Python/Startup
import bodydouble
from bodydouble_nuke import timeline
print(json.dumps({"paths": hiero.core.pluginPath(), "plugins": sorted(k for k in vars(hiero.plugins) if not k.startswith("__")), "errors": loader._errors,
                  "menus": len(timeline._handler), "client": bodydouble.__file__,
                  "glue": sys.modules["bodydouble_nuke"].__file__, "pythonpath": os.environ["BODYDOUBLE_PYTHONPATH"],
                  "address": os.environ["BODYDOUBLE_ADDRESS"]}))
"""


def test_hiero_startup_file_loads_the_timeline_menu(installed):
    """Through a loader that imports every start-up script as a module named after its stem, as Hiero does: the
    installer's start-up file must not become sys.modules['bodydouble'] (it hid the client: no menu)."""
    home = installed["home"]
    plugin = home / ".local" / "share" / "bodydouble" / "nuke" / "plugin"
    assert not (home / ".nuke" / "Python" / "Startup" / "bodydouble.py").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BODYDOUBLE_", "HIERO_"))}
    env["HOME"] = str(home)
    out = subprocess.run([sys.executable, "-c", HIERO_START, str(REPO / "tests" / "fake_nuke")],
                         capture_output=True, text=True, timeout=60, env=env, cwd=home)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["errors"] == [] and r["menus"] == 1
    assert r["paths"] == [str(home / ".nuke"), str(plugin)]
    assert r["plugins"] == ["bodydouble_hiero_startup", "bodydouble_timeline"]
    assert r["client"].startswith(str(plugin.parent / "site-3.11")) and r["glue"].startswith(str(plugin))
    assert r["pythonpath"] == str(plugin.parent / "site-3.11") and r["address"] == "tcp://127.0.0.1:5599"


def test_an_upgrade_removes_the_old_hiero_startup_file(tmp_path, monkeypatch):
    """Installers before the fix wrote ~/.nuke/Python/Startup/bodydouble.py: a re-run removes it (when unedited)."""
    from bodydouble_install import nuke as nuke_install

    monkeypatch.setenv("HOME", str(tmp_path))
    rec = Record(path=tmp_path / "install.json")
    old = rec.write(tmp_path / ".nuke" / "Python" / "Startup" / "bodydouble.py", "import hiero.core\n")
    said: list[str] = []
    new = nuke_install.add_hiero_startup(rec, tmp_path / "base", tmp_path / "base" / "plugin", "tcp://h:1", said.append)
    assert not old.exists() and str(old) not in rec.files and str(new) in rec.files
    assert new.name == "bodydouble_hiero_startup.py" and "removed" in said[0]


def test_extension_installed_with_blenders_command_registers_in_bpy(installed, monkeypatch):
    home = installed["home"]
    assert "installed the extension into Blender 4.5" in installed["first"].stdout
    monkeypatch.setenv("BLENDER_USER_RESOURCES", str(home / "blender-user"))
    r = run_script(blender_python(), "install_extension.py", {}, timeout=150)
    assert r["install"] == ["FINISHED"]
    assert r["addons"] == ["bl_ext.user_default.bodydouble"]
    assert {"fill", "regenerate", "extend", "cancel", "refresh_adapters", "report"} <= set(r["operators"])
    assert r["menus"] == {"NODE_MT_context_menu": True, "SEQUENCER_MT_context_menu": True}
    assert r["heavy_modules"] == []


def test_rerun_is_idempotent_then_uninstall_leaves_nothing(installed):
    home, env = installed["home"], installed["env"]
    second = run_installer(env, *installed["args"])
    assert snapshot(home) == installed["after_first"], second.stdout
    extension = home / "blender-user" / "extensions" / "user_default" / "bodydouble"
    assert (extension / "blender_manifest.toml").is_file()

    run_installer(env, "--uninstall")
    assert snapshot(home) == installed["before"]
    assert (home / ".nuke" / "init.py").read_text() == USER_INIT   # byte for byte, no stray newline
    assert not extension.exists()
    assert "--user disable --now bodydouble.service" in (installed["root"] / "systemctl.log").read_text()
    again = run_installer(env, "--uninstall")
    assert "nothing to uninstall" in again.stdout


def test_blender_missing_prints_zip_and_the_one_step(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "bin").mkdir()
    env = installer_env(home, tmp_path / "bin")
    out = run_installer(env, "--server-python", sys.executable, "--offline", "--no-nuke", "--nuke-init", "print").stdout
    zips = list((home / ".local" / "share" / "bodydouble" / "blender").glob("bodydouble-*.zip"))
    assert len(zips) == 1
    assert f"blender --command extension install-file -r user_default -e {zips[0]}" in out
    assert "start the server:" in out and not (home / ".config" / "systemd").exists()
    run_installer(env, "--uninstall")
    assert snapshot(home) == {}


def test_block_in_a_new_file_and_an_edited_config(tmp_path):
    rec = Record(path=tmp_path / "cfg" / "install.json")
    init = tmp_path / "nuke" / "init.py"
    rec.add_block(init, ["import nuke"], NUKE_BEGIN, NUKE_END)
    rec.add_block(init, ["import nuke", "nuke.pluginAddPath('/x')"], NUKE_BEGIN, NUKE_END)   # re-run: replaced
    assert init.read_text() == f"{NUKE_BEGIN}\nimport nuke\nnuke.pluginAddPath('/x')\n{NUKE_END}\n"
    config = rec.write(tmp_path / "cfg" / "server.toml", "port = 1\n")
    config.write_text("port = 2\n")   # the TD edits it: never replaced nor removed
    assert not rec.ours_unchanged(config)
    rec.save()
    kept = Record.load(rec.path).uninstall(say=lambda _: None)
    assert not init.exists() and not init.parent.exists()
    assert kept == [str(config), str(config.parent)] and config.read_text() == "port = 2\n"


@pytest.mark.parametrize("video_model", ["/models/wan2.1-vace-1.3b", "none", None])
def test_config_names_the_video_model_the_server_reads(tmp_path, video_model):
    from bodydouble_server.config import ServerConfig

    path = tmp_path / "server.toml"
    path.write_text(server_env.config_text("/models/sd15", tmp_path / "adapters", [tmp_path], tmp_path / "takes", 5555,
                                           video_model=video_model))
    cfg = ServerConfig.load(path)
    assert cfg.model == "/models/sd15" and cfg.video_model == video_model
    if video_model is None:   # the embedded test video model, with the key shown commented for the TD
        assert '# video_model = "' in path.read_text() and '"none": no extend' in path.read_text()


NVIDIA_SMI_HEADER = "| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: {cuda}     |\n"


@pytest.mark.parametrize("cuda, build, tag", [("13.1", "cuda", "cu130"), ("12.8", "cuda", "cu128"),
                                              ("12.7", "cuda", "cu126"), ("11.4", "cpu", None)])
def test_torch_build_follows_the_driver(cuda, build, tag):
    gpus = parse_nvidia_smi(NVIDIA_SMI_HEADER.format(cuda=cuda), "NVIDIA RTX A6000, 570.86.15, 49140, 48000\n")
    assert gpus[0].name == "NVIDIA RTX A6000" and gpus[0].memory_free_mib == 48000
    choice = torch_build.choose(gpus)
    assert choice.build == build
    assert choice.index_url == (f"https://download.pytorch.org/whl/{tag}" if tag else None)


def test_this_cpu_machine_gets_the_pinned_cpu_build(monkeypatch):
    from bodydouble_server.workstation.gpus import detect_gpus

    monkeypatch.delenv("BODYDOUBLE_NVIDIA_SMI", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    choice = torch_build.choose(detect_gpus())
    assert (choice.build, choice.index_url) == ("cpu", None)
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().splitlines()
