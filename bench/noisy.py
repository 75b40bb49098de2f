"""A noisy neighbour: busy processes beside the workers, bounded in time.

A small district server also runs PostgreSQL, backups and whatever else the site puts on
it, so the SOS path must stay fast when the CPU is shared. `NoisyNeighbour(n)` starts `n`
processes that spin (pure Python arithmetic, no I/O) until the block ends, each with a
hard deadline of its own so that a bench killed half-way leaves nothing spinning.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from multiprocessing.synchronize import Event as MpEvent

MAX_SECONDS = 900.0  # a hog never outlives this, whatever happens to the bench


def _spin(stop: MpEvent, deadline: float, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    x = 0
    while time.monotonic() < deadline:
        for _ in range(100_000):
            x = (x * 1_103_515_245 + 12_345) & 0xFFFFFFFF
        if stop.is_set():
            return


class NoisyNeighbour:
    """`n` busy processes for the duration of a `with` block (n = 0: nothing)."""

    def __init__(self, n: int, max_seconds: float = MAX_SECONDS) -> None:
        self.n = n
        self.max_seconds = max_seconds
        self.stop = mp.Event()
        self.procs: list[mp.Process] = []

    def __enter__(self) -> NoisyNeighbour:
        cores = os.cpu_count() or 1
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.n):
            # pinned one per core, round robin: the hog competes with whatever the
            # scheduler put there, as a neighbour's job would
            proc = mp.Process(target=_spin, args=(self.stop, deadline, i % cores), daemon=True)
            proc.start()
            self.procs.append(proc)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    @property
    def pids(self) -> dict[str, int]:
        return {f"noisy-{i}": p.pid for i, p in enumerate(self.procs) if p.pid is not None}
