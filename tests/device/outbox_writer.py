"""Helper for the outbox crash test: put_sync samples forever, print each committed id.

Usage: python outbox_writer.py DB_PATH SYNCHRONOUS. Every id is printed (and stdout
flushed) only after ``put_sync`` returned, i.e. after the commit. A second thread keeps
the background writer busy with ``put`` so that the kill also lands mid-batch.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from edgecl.device._outbox import Outbox


def sample_arrays(i: int) -> dict[str, np.ndarray]:
    """The arrays of sample ``i``: a deterministic function of ``i``."""
    rng = np.random.default_rng(i)
    return {"image": rng.random((1, 28, 28), dtype=np.float32),
            "features": rng.integers(0, 256, 16, dtype=np.uint8)}


def main(path: str, synchronous: str) -> None:
    box = Outbox(path, store=("image", "features"), synchronous=synchronous, queue_size=256)

    def background() -> None:
        j = 0
        while True:
            box.put(f"bg{j:07d}", sample_arrays(10_000_000 + j), priority=0.5)
            j += 1
            time.sleep(0.0005)

    threading.Thread(target=background, daemon=True).start()
    i = 0
    while True:
        sid = f"s{i:07d}"
        assert box.put_sync(sid, sample_arrays(i), priority=1.0, meta={"i": i})
        print(sid, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
