"""Benchmarks behind ``edgecl bench``: measured in one run, interleaved, medians and p99."""

from __future__ import annotations
