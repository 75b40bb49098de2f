"""CPU time and resident memory of a process, from /proc (Linux)."""

from __future__ import annotations

import bisect
import os
import time
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuTrace:
    """(wall time, CPU seconds) samples of one process, to read its CPU use over an
    interval known only afterwards (e.g. from the first message it received)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.walls: list[float] = []
        self.cpus: list[float] = []

    def sample(self) -> None:
        self.walls.append(time.time())
        self.cpus.append(cpu_seconds(self.pid))

    def at(self, wall: float) -> float:
        """CPU seconds at `wall`, interpolated between the samples around it."""
        i = bisect.bisect_left(self.walls, wall)
        if i == 0:
            return self.cpus[0]
        if i >= len(self.walls):
            return self.cpus[-1]
        w0, w1 = self.walls[i - 1], self.walls[i]
        c0, c1 = self.cpus[i - 1], self.cpus[i]
        return c0 + (c1 - c0) * (wall - w0) / (w1 - w0) if w1 > w0 else c1


class CpuUse:
    """CPU cores each of several processes keeps busy from now until `cores()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start = time.monotonic()
        self._cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def cores(self) -> dict[str, float]:
        wall = time.monotonic() - self._start
        return {
            name: round((cpu_seconds(pid) - self._cpu[name]) / wall, 2)
            for name, pid in self._pids.items()
        }


def nice(pid: int) -> int:
    """The nice value of the process's main thread."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
