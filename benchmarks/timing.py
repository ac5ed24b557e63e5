"""Wall-clock timing shared by the benchmark scripts (run as `python benchmarks/<script>.py`,
so this directory is on `sys.path`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The shortest wall time (s) of `repeats` calls of `fn`, which must block until its work
    is done (e.g. end in `jax.block_until_ready`)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(min(times))
