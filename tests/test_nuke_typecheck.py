"""mypy over the Nuke glue against `types-nuke` (Nuke's public API stubs): CI fails on a call
Nuke does not have or on wrong arguments. Needs `pip install -r requirements-dev.txt`."""
from __future__ import annotations

import ast
import subprocess
import sys

from .support import REPO

NUKE_DIR = REPO / "host_integration" / "nuke"
CONFIG = NUKE_DIR / "mypy.ini"


def _mypy(*args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(CONFIG), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert "No module named mypy" not in run.stderr, "mypy is missing: pip install -r requirements-dev.txt"
    return run


def test_the_nuke_glue_type_checks_against_types_nuke():
    from importlib.metadata import version

    assert version("types-nuke"), "types-nuke is missing: pip install -r requirements-dev.txt"
    run = _mypy()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout


def test_the_check_catches_calls_nuke_does_not_have(tmp_path):
    """Proof that `nuke` resolves to the stubs (not Any): wrong calls fail."""
    bad = tmp_path / "bad_glue.py"
    bad.write_text(
        "import nuke\n"
        "\n"
        "def render(write: nuke.Node) -> None:\n"
        "    nuke.executeInMainThred(print)\n"        # no such function
        "    nuke.execute(write, '1001', 1003)\n"     # start must be an int
        "    write.setInput('0', None)\n"             # input index must be an int
        "    nuke.nodes.Read().setXYpos(1)\n"         # needs x and y
    )
    run = _mypy(str(bad))
    assert run.returncode != 0
    out = run.stdout
    assert 'Module has no attribute "executeInMainThred"' in out, out
    assert "bad_glue.py:5:" in out and "bad_glue.py:6:" in out and "bad_glue.py:7:" in out, out


def test_only_nuke_api_imports_nuke_and_flow_is_host_agnostic():
    package = NUKE_DIR / "bodydouble_nuke"
    importers = {}
    for path in sorted(package.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names |= {(node.module or "").split(".")[0]} | {a.name for a in node.names if node.level}
        importers[path.name] = names
    assert [name for name, used in importers.items() if "nuke" in used] == ["nuke_api.py"]
    assert "nuke_api" not in importers["flow.py"] and "node" not in importers["flow.py"]
    # init.py runs on the farm and in `nuke -t`: no nuke UI, no client import at load time
    init = (NUKE_DIR / "init.py").read_text()
    assert "menu(" not in init and "import bodydouble" not in init
