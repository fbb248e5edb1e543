"""Deterministic training of the reference student and teacher (torch, CPU).

Run it inside :func:`deterministic_torch`: every random draw is seeded from the recipe,
and a fixed thread count keeps float reductions (gradients) in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from edgecl.zoo.corruptions import corrupt, list_corruptions
from edgecl.zoo.data import Split
from edgecl.zoo.models import StudentEncoder, Teacher
from edgecl.zoo.recipe import ZooRecipe

Progress = Callable[[int], None]


@contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """``threads`` intra-op threads and deterministic kernels inside the block; the caller's
    thread count, deterministic-algorithms setting and torch RNG state are restored after."""
    saved_threads = torch.get_num_threads()
    saved_mode = (torch.are_deterministic_algorithms_enabled(),
                  torch.is_deterministic_algorithms_warn_only_enabled())
    with torch.random.fork_rng(devices=[]):
        try:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(True)
            yield
        finally:
            torch.use_deterministic_algorithms(saved_mode[0], warn_only=saved_mode[1])
            torch.set_num_threads(saved_threads)


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (weight init, dropout) for one training phase."""
    torch.manual_seed(seed)


def _fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, epochs: int, lr: float,
         batch_size: int, seed: int, progress: Progress, label_smoothing: float = 0.0,
         resample: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Adam + one-cycle schedule; ``resample(epoch)`` may supply each epoch's data."""
    rng = np.random.default_rng(seed)
    n_per_epoch = len(labels) if resample is None else len(resample(-1)[1])
    steps = epochs * ((n_per_epoch + batch_size - 1) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    model.train()
    for epoch in range(epochs):
        x_all, y_all = (images, labels) if resample is None else resample(epoch)
        order = rng.permutation(len(y_all))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = torch.from_numpy(x_all[idx])
            y = torch.from_numpy(y_all[idx])
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            progress(len(idx))
    model.eval()


class _StudentNet(nn.Module):
    def __init__(self, encoder: StudentEncoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def student_passes(recipe: ZooRecipe, n_train: int) -> int:
    """Samples the student's training will process (for progress bars)."""
    return recipe.student_epochs * n_train


def train_student(train: Split, num_classes: int, recipe: ZooRecipe,
                  progress: Progress = lambda n: None) -> tuple[StudentEncoder, nn.Linear]:
    """Train the student encoder and its linear head on clean images only."""
    seed_everything(recipe.seed)
    net = _StudentNet(StudentEncoder(recipe.student_channels), num_classes)
    _fit(net, train.images, train.labels, epochs=recipe.student_epochs, lr=recipe.student_lr,
         batch_size=recipe.batch_size, seed=recipe.seed, progress=progress)
    return net.encoder, net.head


def teacher_corruptions(recipe: ZooRecipe) -> list[str]:
    """Corruption types used to augment the teacher (all but the held-out ones)."""
    return [c for c in list_corruptions() if c not in recipe.teacher_held_out]


def augmentation_pool(train: Split, recipe: ZooRecipe,
                      progress: Progress = lambda n: None) -> tuple[np.ndarray, np.ndarray]:
    """``teacher_aug_copies`` corrupted copies of the training set, random type and severity."""
    rng = np.random.default_rng(recipe.seed + 1)
    names = teacher_corruptions(recipe)
    xs, ys = [], []
    for _ in range(recipe.teacher_aug_copies):
        kinds = rng.integers(0, len(names), size=len(train))
        sevs = rng.integers(1, 6, size=len(train))
        out = np.empty_like(train.images)
        for k, name in enumerate(names):
            for sev in range(1, 6):
                sel = np.flatnonzero((kinds == k) & (sevs == sev))
                if len(sel):
                    out[sel] = corrupt(train.images[sel], name, sev, rng)
        xs.append(out)
        ys.append(train.labels)
        progress(len(train))
    return np.concatenate(xs), np.concatenate(ys)


def teacher_passes(recipe: ZooRecipe, n_train: int) -> int:
    """Samples the teacher's training will process (for progress bars)."""
    return recipe.teacher_epochs * (n_train + int(recipe.teacher_aug_per_epoch * n_train))


def train_teacher(train: Split, pool: tuple[np.ndarray, np.ndarray], num_classes: int,
                  recipe: ZooRecipe, progress: Progress = lambda n: None) -> Teacher:
    """Train the teacher on clean images plus a fresh draw from the augmentation pool each epoch."""
    seed_everything(recipe.seed + 2)
    model = Teacher(recipe.teacher_width, recipe.teacher_hidden, num_classes)
    rng = np.random.default_rng(recipe.seed + 3)
    n_aug = int(recipe.teacher_aug_per_epoch * len(train))

    def resample(epoch: int) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.choice(len(pool[1]), size=n_aug, replace=n_aug > len(pool[1]))
        if epoch < 0:  # size query only
            return pool[0][:0], np.zeros(len(train) + n_aug)
        return (np.concatenate([train.images, pool[0][pick]]),
                np.concatenate([train.labels, pool[1][pick]]))

    _fit(model, train.images, train.labels, epochs=recipe.teacher_epochs, lr=recipe.teacher_lr,
         batch_size=recipe.batch_size, seed=recipe.seed + 4, progress=progress,
         label_smoothing=0.05, resample=resample)
    return model


@torch.no_grad()
def torch_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray,
                   batch_size: int = 500) -> float:
    """Top-1 accuracy of a torch classifier (eval mode)."""
    model.eval()
    correct = 0
    for s in range(0, len(labels), batch_size):
        out = model(torch.from_numpy(np.array(images[s:s + batch_size], copy=True)))
        correct += int((out.argmax(1).numpy() == labels[s:s + batch_size]).sum())
    return correct / max(1, len(labels))
