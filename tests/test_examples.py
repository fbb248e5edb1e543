"""README's Python examples and the device example app run for real, so they never rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_python_blocks() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_examples_run():
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    for code in blocks:
        res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
        assert res.returncode == 0, f"README example failed:\n{code}\n{res.stderr[-3000:]}"


def test_device_app_runs_torch_free(tiny_zoo):
    code = ("import runpy, sys; sys.argv = ['app', '--bundle', sys.argv[1], '--frames', '50'];"
            "\ntry:\n    runpy.run_path('device/app.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules and 'onnxscript' not in sys.modules\n"
            "print('TORCH-FREE')")
    res = subprocess.run([sys.executable, "-c", code, str(tiny_zoo.student_bundle)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert res.returncode == 0, res.stderr
    assert "50 frames" in res.stdout and "refused a bad frame: NaN" in res.stdout
    assert "TORCH-FREE" in res.stdout
