"""Where edgecl caches built artefacts: ``$EDGECL_HOME`` (default ``~/.cache/edgecl``)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """The cache root: ``$EDGECL_HOME`` or ``~/.cache/edgecl``."""
    env = os.environ.get("EDGECL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecl"
