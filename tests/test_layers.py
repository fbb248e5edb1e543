"""The package layers (pyproject [tool.importlinter]) hold, statically and at run time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is part of the dev extra"
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("package", "never"), [
    ("edgecl.device", ["edgecl.cloud", "edgecl.fleet", "edgecl.zoo", "edgecl.eval",
                       "edgecl.bench", "torch", "scipy", "matplotlib"]),
    ("edgecl.ood", ["edgecl.device", "edgecl.zoo", "edgecl.eval", "torch"]),
    ("edgecl.adapt", ["edgecl.device", "edgecl.zoo", "edgecl.eval", "torch"]),
    ("edgecl.cloud", ["edgecl.fleet", "edgecl.zoo", "edgecl.eval", "edgecl.bench"]),
])
def test_importing_a_layer_loads_nothing_above_it(package, never):
    code = (f"import sys, json, {package}; "
            f"print(json.dumps(sorted(m for m in {never!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []
