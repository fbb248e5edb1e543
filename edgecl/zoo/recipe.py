"""Zoo recipes: every setting that determines the reference models, hashed for caching."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from edgecl._exceptions import ConfigError

# Bump when training code changes the models or what the bundles carry (3: feature_stats;
# 4: a fixed torch thread count, ``ZooRecipe.threads``, instead of min(4, cpu count);
# 5: the student bundle carries probe.npz, the inputs every update is tried on).
ZOO_CODE_VERSION = 5

# Corruptions the teacher never sees in training: its accuracy on them is earned.
TEACHER_HELD_OUT: tuple[str, ...] = ("speckle_noise", "motion_blur", "shear", "zigzag", "fog")


@dataclass(frozen=True)
class ZooRecipe:
    """Hyperparameters of a zoo build. Equal recipes give bit-identical models and reports on
    the same machine and library versions; ``threads`` is part of the recipe because float
    reductions in training (and so the models) depend on the number of threads."""

    variant: str = "full"
    seed: int = 0
    student_channels: tuple[int, int, int] = (16, 32, 64)
    student_epochs: int = 12
    student_lr: float = 3e-3
    teacher_width: int = 32
    teacher_hidden: int = 256
    teacher_epochs: int = 10
    teacher_lr: float = 2e-3
    teacher_aug_copies: int = 5
    teacher_aug_per_epoch: float = 2.0
    teacher_held_out: tuple[str, ...] = TEACHER_HELD_OUT
    train_fraction: float = 1.0
    eval_severity: int = 5
    batch_size: int = 64
    threads: int = 2
    code_version: int = ZOO_CODE_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {self.threads!r}")

    def digest(self) -> str:
        """Short stable hash of the recipe (the cache key)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return asdict(self)


RECIPES: dict[str, ZooRecipe] = {
    "full": ZooRecipe(),
    # For tests: the same pipeline, small models, a fraction of the data, few epochs.
    "tiny": ZooRecipe(variant="tiny", student_channels=(8, 16, 32), student_epochs=8,
                      teacher_width=16, teacher_hidden=96, teacher_epochs=3,
                      teacher_aug_copies=1, teacher_aug_per_epoch=1.0, train_fraction=0.5),
}


def get_recipe(variant: str, **overrides: object) -> ZooRecipe:
    """The named recipe, optionally with fields overridden."""
    try:
        recipe = RECIPES[variant]
    except KeyError:
        raise ConfigError(f"unknown zoo variant {variant!r}; known: {sorted(RECIPES)}") from None
    return replace(recipe, **overrides) if overrides else recipe  # type: ignore[arg-type]
