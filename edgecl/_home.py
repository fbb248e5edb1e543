"""Where edgecl caches built artefacts: ``$EDGECL_HOME`` (default ``~/.cache/edgecl``)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``home`` when given, else ``$EDGECL_HOME``, else ``~/.cache/edgecl``."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get("EDGECL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecl"
