"""Build the Blender extension zip, check its manifest and contents, and install it into real Blender."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .blender_scripts.launcher import BLENDERS, REPO, blender_python, run_script

BUILD = REPO / "host_integration" / "blender" / "build_extension.py"
PACKAGE = REPO / "host_integration" / "blender" / "bodydouble_blender"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Offline build: pyzmq repacked from this venv (Python 3.11, like Blender 4.2-4.5's)."""
    out = tmp_path_factory.mktemp("ext-dist")
    proc = subprocess.run([sys.executable, str(BUILD), "--from-installed", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_manifest_and_contents(built):
    assert re.fullmatch(r"bodydouble-0\.1\.0-linux-x64\.zip", built.name)
    with zipfile.ZipFile(built) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
        sources = {n: zf.read(n).decode() for n in names if n.endswith(".py")}
        thin = zipfile.ZipFile(zf.open("wheels/bodydouble-0.1.0-py3-none-any.whl"))
        thin_names = set(thin.namelist())
        thin_sources = {n: thin.read(n).decode() for n in thin_names if n.endswith(".py")}

    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == "bodydouble" and manifest["type"] == "add-on"
    # What the suite tests (bpy 4.5 and 5.0); the maximum is exclusive, so a 5.1 does not install it untested.
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.2.0", "5.1.0")
    assert set(manifest["permissions"]) == {"network", "files"}
    assert manifest["platforms"] == ["linux-x64"]
    wheels = manifest["wheels"]
    assert "./wheels/bodydouble-0.1.0-py3-none-any.whl" in wheels
    assert any(re.match(r"\./wheels/pyzmq-\d+\.\d+\.\d+-cp311-.*linux.*x86_64\.whl$", w) for w in wheels), wheels
    assert {w.removeprefix("./") for w in wheels} <= names
    # The extension package at the zip's root, every module of the source folder, nothing else.
    expected = {p.name for p in PACKAGE.glob("*.py")}
    assert {n for n in names if "/" not in n and n.endswith(".py")} == expected
    assert "register" in sources["__init__.py"] and "unregister" in sources["__init__.py"]
    assert not any(n.startswith("bodydouble/") for n in names), "thin client must come as a wheel, not a copy"
    # The thin client wheel: the package only (no server), with metadata.
    assert {"bodydouble/__init__.py", "bodydouble/client.py", "bodydouble/background.py", "bodydouble/jobspec.py",
            "bodydouble-0.1.0.dist-info/METADATA", "bodydouble-0.1.0.dist-info/RECORD"} <= thin_names
    assert not any(n.startswith("bodydouble_server") for n in thin_names)
    assert not {"bodydouble/cli.py", "bodydouble/doctor.py"} & thin_names  # the command line stays out of Blender
    # Never torch (nor any other server-side dependency) in what Blender imports.
    heavy = re.compile(r"^\s*(import|from)\s+(torch|diffusers|peft|transformers|OpenImageIO|bodydouble_server)\b", re.M)
    offenders = [n for n, text in {**sources, **thin_sources}.items() if heavy.search(text)]
    assert offenders == []


@pytest.mark.parametrize("version", sorted(BLENDERS))
def test_blender_validates_and_installs_the_zip(built, tmp_path, version):
    python = blender_python(version)
    # Blender's own manifest validator (the one `blender --command extension validate` runs).
    validator = subprocess.run(
        [python, "-c", "import bpy, os; print(os.path.join(bpy.utils.system_resource('SCRIPTS'), "
                       "'addons_core', 'bl_pkg', 'cli', 'blender_ext.py')); os._exit(0)"],
        capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1]
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(built).extractall(unpacked)
    check = subprocess.run([python, validator, "validate", str(unpacked)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    # Install into a throwaway Blender user folder, as Preferences > Get Extensions > Install from Disk does.
    os.environ["BLENDER_USER_RESOURCES"] = str(tmp_path / "blender-user")
    try:
        r = run_script(python, "install_extension.py", {"zip": str(built)}, timeout=150)
    finally:
        del os.environ["BLENDER_USER_RESOURCES"]
    assert r["install"] == ["FINISHED"]
    assert r["addons"] == ["bl_ext.user_default.bodydouble"]
    assert {"fill", "regenerate", "extend", "cancel", "refresh_adapters", "report"} <= set(r["operators"])
    assert r["prefs"] == {"server_address": "tcp://127.0.0.1:5555", "connect_timeout": pytest.approx(5.0),
                          "output_root": "", "default_steps": 20, "default_strength": pytest.approx(1.0)}
    # Blender installed the wheels into the extensions' site-packages; the thin client is imported from there
    # (this venv also has pyzmq, which may win on sys.path; in Blender only the wheel's exists).
    site = tmp_path / "blender-user" / "extensions" / ".local" / "lib" / "python3.11" / "site-packages"
    assert r["thin_client_file"].startswith(str(site))
    assert (site / "zmq" / "__init__.py").is_file() and (site / "bodydouble" / "background.py").is_file()
    assert r["menus"] == {"NODE_MT_context_menu": True, "SEQUENCER_MT_context_menu": True}
    assert r["heavy_modules"] == []
