"""The docs' examples run as the docs say, the README stays a short guide, links stay inside.

Every ```python block of README.md and docs/*.md is saved as ``example.py`` in an empty
directory and run there with the project's python (``sys.executable``: the venv that
``./run`` creates, with edgecl installed in editable mode) and without ``PYTHONPATH``, so an
example that only works from the checkout root fails here. The device example app runs the
way the README shows, from the repository root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 340


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


EXAMPLES = [(path, i, code) for path in [README, *DOCS]
            for i, code in enumerate(python_blocks(path), start=1)]


def test_the_readme_has_runnable_examples():
    assert len(python_blocks(README)) >= 4


@pytest.mark.parametrize(("path", "index", "code"), EXAMPLES,
                         ids=[f"{_rel(p)}-{i}" for p, i, _ in EXAMPLES])
def test_doc_example_runs(path, index, code, tmp_path):
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    res = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=_env())
    assert res.returncode == 0, (f"{_rel(path)}, python example {index} failed:\n{code}\n"
                                 f"{res.stderr[-3000:]}")


def test_device_app_runs_torch_free(tiny_zoo):
    # as the README says: `.venv/bin/python device/app.py --bundle <path>` from the root;
    # -X importtime lists every module the app imported (on stderr)
    res = subprocess.run([sys.executable, "-X", "importtime", "device/app.py", "--bundle",
                          str(tiny_zoo.student_bundle), "--frames", "50"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert "50 frames" in res.stdout and "refused a bad frame: NaN" in res.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    roots = {m.split(".")[0] for m in imported}
    assert "edgecl.device" in imported and "onnxruntime" in roots
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "onnxscript")}
    assert not heavy, sorted(heavy)[:10]


# -- the README's shape -------------------------------------------------------------------

def test_readme_is_a_short_guide_that_starts_with_demo_and_test():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    assert lines[0].startswith("# ")
    content = [line.strip() for line in lines[1:] if line.strip()]
    assert content[0].startswith("./run demo"), content[0]
    assert content[1].startswith("./run test"), content[1]


# -- links --------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.S | re.M)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(].*?[\"')])?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", flags=re.M)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
_SCHEME = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://|\bmailto:|\bwww\.")
_UP_PATH = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.\-/]*)")


def _prose(text: str) -> str:
    """The text without fenced code, indented code blocks and inline code."""
    text = _FENCE.sub("", text)
    kept, previous_blank = [], True
    for line in text.splitlines():
        indented = line.startswith(("    ", "\t"))
        if indented and (previous_blank or (kept and kept[-1] == "")):
            kept.append("")  # an indented code block (after a blank line)
            continue
        kept.append(line)
        previous_blank = not line.strip()
    return re.sub(r"(`+).*?\1", "", "\n".join(kept), flags=re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _inside(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: _rel(p))
def test_links_point_at_files_of_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    prose = _prose(text)
    problems = []
    outside = _SCHEME.findall(prose) + _AUTOLINK.findall(prose)
    if outside:
        problems.append(f"links out of the repository: {outside}")
    targets = _INLINE_LINK.findall(prose) + _REF_DEF.findall(prose)
    for target in targets:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            problems.append(f"{target}: not a relative link")
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part) if file_part else doc
        if file_part.startswith("/") or not _inside(dest):
            problems.append(f"{target}: leaves the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {_rel(dest.resolve())}")
    # paths like ../shared/... in text or code point beside the clone, not into it
    for path in _UP_PATH.findall(text):
        if not _inside(doc.parent / path):
            problems.append(f"{path}: a path outside the repository")
    assert not problems, f"{_rel(doc)}:\n" + "\n".join(problems)
    if doc is README:
        assert targets, "the README links to the docs"
