"""The reference zoo as a source of the service's teacher and bundle, when a config asks.

The one module of :mod:`edgecl.cloud` that imports :mod:`edgecl.zoo`, and only when
``teacher.zoo`` is used without a ``teacher.program`` or ``bundles.zoo_student`` is on;
the zoo needs the ``zoo`` extra (mlxtend, scipy, pillow, tqdm), which a cloud-only
install lacks: that is a :class:`~edgecl.MissingDependency` naming it, not a raw import error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecl._exceptions import MissingDependency

_HINT = ("the reference zoo (teacher.zoo / bundles.zoo_student) needs the 'zoo' extra: "
         "pip install 'edgecl[cloud,zoo]', or set teacher.program and bundles.paths "
         "to your own teacher and bundle")


def _built(variant: str, home: str | None) -> Any:
    try:
        from edgecl.zoo import build_zoo
    except ImportError as exc:
        raise MissingDependency(f"{_HINT} (missing: {exc.name})") from exc
    try:
        return build_zoo(variant, home=home, progress=False)
    except MissingDependency:
        raise
    except ImportError as exc:  # a zoo dependency imported lazily inside the build
        raise MissingDependency(f"{_HINT} (missing: {exc.name})") from exc


def zoo_teacher(variant: str, home: str | None) -> tuple[Any, tuple[str, ...]]:
    """The zoo's teacher module (built or reused under ``home``) and its class names."""
    from edgecl.zoo.data import CLASS_NAMES

    built = _built(variant, home)
    return built.load_teacher(), tuple(CLASS_NAMES)


def zoo_student_bundle(variant: str, home: str | None) -> Path:
    """The directory of the zoo's student bundle (built or reused under ``home``)."""
    return Path(_built(variant, home).student_bundle)
