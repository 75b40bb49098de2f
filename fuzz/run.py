"""Run one fuzz target: `python -m fuzz.run TARGET --seconds N [--engine atheris|plain]`.

With atheris installed (`pip install -e '.[fuzz]'`) the target runs under libFuzzer with
coverage feedback; otherwise (or with --engine plain) a small mutation fuzzer feeds it
mutated seeds and hostile tokens. Seeds, the corpus and any crashing inputs live under
var/fuzz/TARGET/ (git-ignored). The exit status is 1 when a crash was found.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

OUT = Path("var/fuzz")
# Inputs a hostile sender would try: overflowing numbers, non-standard constants, deep
# nesting, escapes, separators of the formats involved.
TOKENS = (
    b"[" * 3000,
    b"{" * 3000,
    b'{"a":' * 2000,
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"9" * 5000,
    b"18446744073709551616",
    b"-0",
    b'"\\ud800"',
    b'"\\u0000"',
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\r\n",
    b'"',
    b",",
    b";",
    b"\xef\xbc\x9b",  # full-width semicolon
    b"%ff",
    b"&action=",
    b"=",
    b".",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"x" * 140_000,
)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four random edits: flip, insert, delete, duplicate, splice, hostile token."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        op = rng.randrange(7)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and out:
            del out[at : at + rng.randint(1, 16)]
        elif op == 3 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 64)]
        elif op == 4:
            other = rng.choice(pool)
            start = rng.randint(0, len(other))
            out[at:] = other[start:]
        elif op == 5:
            out[at:at] = rng.choice(TOKENS)
        else:
            out = out[:at]
    return bytes(out[:200_000])


def plain_fuzz(
    name: str,
    target: Callable[[bytes], None],
    seeds: list[bytes],
    seconds: float,
    max_runs: int | None = None,
    save: bool = True,
) -> dict[str, bytes]:
    """Mutate seeds into the target until the time (or max_runs) is up; return the crashes
    found, one input per distinct (exception type, raising line)."""
    rng = random.Random(0x5EC)  # a fixed seed: the same inputs in the same order each run
    pool = list(seeds) or [b""]
    crashes: dict[str, bytes] = {}
    for seed in seeds:
        target(seed)  # seeds are valid input: one that fails is a broken target
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (max_runs is None or runs < max_runs):
        data = mutate(rng, rng.choice(pool), pool)
        runs += 1
        try:
            target(data)
        except Exception as exc:  # every escape is a finding
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            if key not in crashes:
                crashes[key] = data
                where = save_crash(name, data) if save else "not saved"
                print(f"CRASH {key}: {str(exc)[:200]!r} -> {where}", flush=True)
        else:
            if len(pool) < 2000 and rng.random() < 0.05:
                pool.append(data)  # no coverage feedback: keep a sample to mutate further
    print(f"{name}: {runs} runs, {len(crashes)} distinct crash(es)")
    return crashes


def libfuzzer_dict(tokens: tuple[bytes, ...]) -> str:
    """The short tokens as a libFuzzer dictionary (one quoted, \\xNN-escaped per line)."""
    lines = []
    for token in tokens:
        if len(token) <= 64:
            body = "".join(
                chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02X}" for b in token
            )
            lines.append(f'"{body}"')
    return "\n".join(lines) + "\n"


def save_crash(name: str, data: bytes) -> Path:
    directory = OUT / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"crash-{hashlib.sha256(data).hexdigest()}"
    path.write_bytes(data)
    return path


def load_targets(instrument: bool) -> ModuleType:
    if instrument:
        import atheris

        with atheris.instrument_imports(
            include=["ingest", "registry", "notifier", "carewatch", "fuzz"]
        ):
            from fuzz import targets
    else:
        from fuzz import targets
    return targets


def atheris_fuzz(name: str, seconds: int) -> None:
    import atheris

    targets = load_targets(instrument=True)
    corpus = OUT / name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in targets.SEEDS.get(name, []):
        (corpus / hashlib.sha256(seed).hexdigest()).write_bytes(seed)
    dictionary = OUT / name / "tokens.dict"
    dictionary.write_text(libfuzzer_dict(TOKENS))
    argv = [
        sys.argv[0],
        str(corpus),
        f"-dict={dictionary}",
        f"-max_total_time={seconds}",
        "-max_len=20000",
        f"-artifact_prefix={OUT / name}/",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, targets.TARGETS[name])
    atheris.Fuzz()  # exits the process: status 0, or non-zero with the crash saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--engine", choices=("auto", "atheris", "plain"), default="auto")
    args = parser.parse_args(argv)
    have_atheris = importlib.util.find_spec("atheris") is not None
    engine = args.engine if args.engine != "auto" else ("atheris" if have_atheris else "plain")
    if engine == "atheris":
        atheris_fuzz(args.target, args.seconds)
        return 0
    targets = load_targets(instrument=False)
    if args.target not in targets.TARGETS:
        parser.error(f"unknown target {args.target!r}; known: {', '.join(targets.TARGETS)}")
    crashes = plain_fuzz(
        args.target, targets.TARGETS[args.target], targets.SEEDS.get(args.target, []), args.seconds
    )
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
