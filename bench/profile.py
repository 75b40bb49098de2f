"""Sample a running worker with py-spy and summarise where its time goes."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])  # this checkout, whatever its path
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _py_spy() -> str:
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    out.parent.mkdir(exist_ok=True)
    cmd = [_py_spy(), "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    return subprocess.Popen(
        [*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    proc.wait(30)


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", f"{_ROOT}/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(path: Path, top: int = 15) -> list[str]:
    """Functions by inclusive share of samples (each counted once per stack), with their
    self share, from py-spy's raw (collapsed stack) output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_name(f) for f in stack.split(";")]
        for name in set(frames[1:]):  # the first frame is the thread
            inclusive[name] += n
        own[frames[-1]] += n
    if not total:
        return []
    return [
        f"{100 * n / total:5.1f}% incl {100 * own[name] / total:5.1f}% self  {name}"
        for name, n in inclusive.most_common(top)
    ]
