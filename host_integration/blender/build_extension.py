#!/usr/bin/env python3
"""Build the BodyDouble Blender extension zip (Blender 4.2+): add-on code, manifest, wheels.

    python host_integration/blender/build_extension.py                      # fetch pyzmq for all platforms
    python host_integration/blender/build_extension.py --platform linux-x64  # one platform
    python host_integration/blender/build_extension.py --from-installed      # offline: this Python's pyzmq
    python host_integration/blender/build_extension.py --wheel-dir ~/wheels  # wheels you downloaded yourself

What goes in ``dist/bodydouble-<version>.zip``:
- ``bodydouble_blender/*.py`` and ``blender_manifest.toml`` at the zip's root (the extension package);
- ``wheels/bodydouble-<version>-py3-none-any.whl``: the thin client, built here from ``plugin/bodydouble``
  (pure Python, pyzmq + numpy; never torch). Nothing of it is committed inside the extension;
- ``wheels/pyzmq-*.whl``: from PyPI (``pip download``), a folder, or repacked from this interpreter.
The manifest's ``wheels`` and ``platforms`` are rewritten to list exactly what was packed.
Blender ships numpy; pyzmq, fileseq (pure Python) and the thin client need wheels. Blender 4.2-4.5 run
Python 3.11.
Install the result with ``blender --command extension install-file -r user_default dist/bodydouble-*.zip``.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "bodydouble_blender"
REPO = HERE.parent.parent
THIN_CLIENT = REPO / "plugin" / "bodydouble"
BLENDER_PYTHON = "3.11"

# Blender platform name -> pip --platform tags (newest first; pip takes any of them).
PLATFORMS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "linux-arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "macos-arm64": ["macosx_11_0_arm64"],
    "macos-x64": ["macosx_10_15_x86_64", "macosx_10_9_x86_64"],
    "windows-x64": ["win_amd64"],
}
DEFAULT_PLATFORMS = ["linux-x64", "macos-arm64", "macos-x64", "windows-x64"]
PYZMQ = "pyzmq>=26,<28"
# Pure-Python dependencies of the thin client: repacked from this interpreter (one wheel serves every platform).
PURE_DEPS = ("fileseq",)
# The command line (`bodydouble serve|fill ...`) has no use inside Blender, and `serve` reaches for the server
# package when it is installed beside it.
CLI_ONLY = {"cli.py", "cliflags.py", "__main__.py"}


# -- wheels -----------------------------------------------------------------------------------------
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> Path:
    """A wheel from {archive name: bytes}; writes RECORD. Deterministic (fixed timestamps, sorted)."""
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name in sorted(files):
        writer.writerow([name, _record_hash(files[name]), len(files[name])])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    files = dict(files, **{f"{dist_info}/RECORD": record.getvalue().encode()})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return path


def thin_client_version() -> str:
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', (THIN_CLIENT / "__init__.py").read_text(), re.M)
    if not match:
        raise SystemExit(f"no __version__ in {THIN_CLIENT / '__init__.py'}")
    return match.group(1)


def build_thin_client_wheel(dest: Path) -> Path:
    """``bodydouble-<version>-py3-none-any.whl``: the thin client library (plugin/bodydouble, minus its CLI)."""
    version = thin_client_version()
    dist_info = f"bodydouble-{version}.dist-info"
    files = {
        f"bodydouble/{p.relative_to(THIN_CLIENT).as_posix()}": p.read_bytes()
        for p in sorted(THIN_CLIENT.rglob("*.py"))
        if "__pycache__" not in p.parts and p.relative_to(THIN_CLIENT).as_posix() not in CLI_ONLY
    }
    files[f"{dist_info}/METADATA"] = (
        "Metadata-Version: 2.1\nName: bodydouble\nVersion: {v}\n"
        "Summary: BodyDouble thin client (wire protocol, client and host layer; pyzmq, numpy, fileseq)\n"
        "Requires-Python: >=3.10\nRequires-Dist: pyzmq>=25\nRequires-Dist: numpy>=1.23\nRequires-Dist: fileseq>=3.4\n"
    ).format(v=version).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: bodydouble build_extension\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{dist_info}/top_level.txt"] = b"bodydouble\n"
    return _write_wheel(dest / f"bodydouble-{version}-py3-none-any.whl", files, dist_info)


def repack_installed(dist_name: str, dest: Path) -> Path:
    """Rebuild the wheel of a distribution installed in this interpreter (offline builds, tests)."""
    from importlib import metadata

    dist = metadata.distribution(dist_name)
    info_dir = next(p for p in (dist.files or []) if p.parts[0].endswith(".dist-info")).parts[0]
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise SystemExit(f"{dist_name}: no Tag in its WHEEL file")
    py, abi = tags[0].split("-")[:2]
    platform = ".".join(dict.fromkeys(t.split("-")[2] for t in tags))
    files = {}
    for entry in dist.files or []:
        name = entry.as_posix()
        if name.startswith("..") or "__pycache__" in entry.parts or name.endswith(".pyc"):
            continue
        if name.split("/")[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json") and name.startswith(info_dir):
            continue
        files[name] = Path(entry.locate()).read_bytes()
    normal = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    return _write_wheel(dest / f"{normal}-{dist.version}-{py}-{abi}-{platform}.whl", files, info_dir)


def fetch_pyzmq(dest: Path, platforms: list[str], requirement: str = PYZMQ) -> list[Path]:
    """``pip download`` pyzmq binary wheels for Blender's Python on each platform."""
    got = []
    for name in platforms:
        before = set(dest.glob("pyzmq-*.whl"))
        cmd = [sys.executable, "-m", "pip", "download", requirement, "--only-binary=:all:", "--no-deps",
               "--python-version", BLENDER_PYTHON, "--implementation", "cp", "-d", str(dest)]
        for tag in PLATFORMS[name]:
            cmd += ["--platform", tag]
        subprocess.run(cmd, check=True)
        new = [p for p in dest.glob("pyzmq-*.whl") if name in wheel_platforms(p.name)]
        if not new:
            raise SystemExit(f"pip found no pyzmq wheel for {name}")
        got += [p for p in new if p not in got]
    return got


def wheel_platforms(filename: str) -> list[str]:
    """Blender's platform names a wheel file serves ([]: pure Python, any platform)."""
    found = []
    for tag in filename[:-4].split("-")[-1].split("."):
        if tag == "any":
            continue
        if "linux" in tag:
            found.append("linux-arm64" if "aarch64" in tag else "linux-x64")
        elif tag.startswith("macosx"):
            if "universal2" in tag:
                found += ["macos-arm64", "macos-x64"]
            else:
                found.append("macos-arm64" if "arm64" in tag else "macos-x64")
        elif tag.startswith("win"):
            found.append("windows-arm64" if "arm64" in tag else "windows-x64")
    return sorted(set(found))


# -- manifest and zip -------------------------------------------------------------------------------
def write_manifest(source: Path, dest: Path, wheels: list[str], platforms: list[str]) -> dict:
    text = source.read_text()
    listed = "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]"
    text, count = re.subn(r"^wheels = \[.*?^\]", lambda _: listed, text, flags=re.M | re.S)
    if count != 1:
        raise SystemExit(f"{source}: expected one `wheels = [...]` block")
    text = re.sub(r"^platforms = .*\n", "", text, flags=re.M)
    if platforms:
        line = "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]\n"
        text = re.sub(r"^(blender_version_min = .*\n)", lambda m: m.group(1) + line, text, flags=re.M)
    dest.write_text(text)
    return tomllib.loads(text)


def build(out: Path, wheel_files: list[Path]) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "bodydouble"
        (stage / "wheels").mkdir(parents=True)
        for src in sorted(PACKAGE.glob("*.py")):
            shutil.copy2(src, stage / src.name)
        thin = build_thin_client_wheel(stage / "wheels")
        names = [thin.name]
        for wheel in wheel_files:
            shutil.copy2(wheel, stage / "wheels" / wheel.name)
            names.append(wheel.name)
        platforms = sorted({p for n in names for p in wheel_platforms(n)})
        manifest = write_manifest(PACKAGE / "blender_manifest.toml", stage / "blender_manifest.toml", names, platforms)
        out.mkdir(parents=True, exist_ok=True)
        suffix = f"-{platforms[0]}" if len(platforms) == 1 else ""
        target = out / f"{manifest['id']}-{manifest['version']}{suffix}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(stage.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(stage).as_posix())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="folder for the zip (default: %(default)s)")
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                        help=f"platform(s) to fetch pyzmq for; repeat (default: {', '.join(DEFAULT_PLATFORMS)})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel-dir", type=Path, help="take pyzmq wheels from this folder instead of PyPI")
    source.add_argument("--from-installed", action="store_true",
                        help="offline: repack the pyzmq installed in this Python (its platform only)")
    parser.add_argument("--cache", type=Path, default=PACKAGE / "wheels",
                        help="where fetched wheels are kept between builds (not committed)")
    args = parser.parse_args(argv)

    if args.from_installed:
        tmp = Path(tempfile.mkdtemp(prefix="bodydouble-wheels-"))
        wheels = [repack_installed("pyzmq", tmp)]
    elif args.wheel_dir:
        wheels = sorted(args.wheel_dir.glob("pyzmq-*.whl"))
        if not wheels:
            parser.error(f"no pyzmq-*.whl in {args.wheel_dir}")
    else:
        args.cache.mkdir(parents=True, exist_ok=True)
        wheels = fetch_pyzmq(args.cache, args.platform or DEFAULT_PLATFORMS)
    pure = Path(tempfile.mkdtemp(prefix="bodydouble-pure-"))
    wheels += [repack_installed(name, pure) for name in PURE_DEPS]
    target = build(args.out, wheels)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
