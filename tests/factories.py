"""Model factories for CLI tests (``edgecl export tests.factories:small_model``)."""

from __future__ import annotations

from tests.conftest import SmallEncoder


def small_model():  # -> (encoder, head)
    """The small test encoder and its head."""
    return SmallEncoder.build(seed=1)
