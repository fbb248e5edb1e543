"""``python -m edgecl``: the same as the ``edgecl`` command."""

from __future__ import annotations

import sys

from edgecl.cli import main

sys.exit(main())
