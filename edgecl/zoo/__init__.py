"""Reference zoo: MNIST-5k data, distribution shifts, drifting streams, student/teacher models."""

from __future__ import annotations
