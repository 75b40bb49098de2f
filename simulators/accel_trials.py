"""Synthetic wrist accelerometer trials written in the SisFall layout.

Each trial is built from the physics the fall detector relies on, in the wristband's own
frame (x along the forearm): gravity seen from the current wrist orientation, plus the
accelerations of the movement, plus sensor noise.

- Falls (F01 forward, F02 backward, F03 lateral): standing with the arm hanging, a partial
  free fall while the body rotates, an impact spike with a bounce or two, then lying still
  with the forearm on the floor (gravity turned by 60-120 degrees).
- ADLs: D01 walking (arm swing, step bounce), D03 jogging (a heel strike every step, then
  standing), D08 sitting down hard (a dip, a soft landing, hands on the lap), D15 bending
  (slow trunk flexion and back), D20 clapping then lowering the arms (hard clap spikes).
  D20 is not a SisFall code: SisFall has no clapping, which is a wrist detector's classic
  false alarm.

Output is what the SisFall readers expect: `<out>/<subject>/<code>_<subject>_R<nn>.txt`,
200 Hz, nine integer columns per line ending in ';' (ADXL345 at 256 counts/g, the gyroscope
left at zero, an MMA8451Q at 1024 counts/g). Everything is deterministic for a given seed.

    python -m simulators.accel_trials tests/data/synthetic_falls --seed 7
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Rng = np.random.Generator

HZ = 200
DURATION_S = 6.5
ADXL_COUNTS_PER_G = 8192 / 32  # +-16 g over 13 bits, as the SisFall readers convert back
MMA_COUNTS_PER_G = 1024

HANGING = np.array([-1.0, 0.0, 0.0])  # standing, arm along the body: gravity along -x
FOREARM_LEVEL = np.array([0.0, 0.0, -1.0])  # forearm horizontal, palm down


def _unit(v: FloatArray) -> FloatArray:
    return v / np.linalg.norm(v)


def _tilt(base: FloatArray, degrees: float, rng: Rng) -> FloatArray:
    """`base` turned by `degrees` about a random axis perpendicular to it."""
    axis = _unit(np.cross(base, _unit(rng.normal(size=3))))
    rad = math.radians(degrees)
    return _unit(base * math.cos(rad) + np.cross(axis, base) * math.sin(rad))


def _slerp(a: FloatArray, b: FloatArray, frac: FloatArray) -> FloatArray:
    """Unit vectors from a to b along the great circle, one per entry of frac (0..1)."""
    omega = math.acos(float(np.clip(np.dot(a, b), -1.0, 1.0)))
    if omega < 1e-6:
        return np.tile(a, (len(frac), 1))
    f = np.clip(frac, 0.0, 1.0)[:, None]
    return (np.sin((1 - f) * omega) * a + np.sin(f * omega) * b) / math.sin(omega)


def _spike(t: FloatArray, at: float, width_s: float, peak_g: float) -> FloatArray:
    """A half-sine pulse: the shape of a short collision."""
    phase = (t - at) / width_s
    return np.where((phase >= 0) & (phase <= 1), peak_g * np.sin(np.pi * phase), 0.0)


def _orientation_path(
    t: FloatArray, start: FloatArray, end: FloatArray, t0: float, t1: float
) -> FloatArray:
    return _slerp(start, end, (t - t0) / max(t1 - t0, 1e-3))


def _fall(t: FloatArray, rng: Rng, code: str) -> FloatArray:
    impact = rng.uniform(2.0, 2.6)
    drop = rng.uniform(0.35, 0.55)  # seconds of (partial) free fall before the impact
    upright = _tilt(HANGING, rng.uniform(0, 15), rng)
    turn = {"F01": (60, 90), "F02": (70, 110), "F03": (80, 120)}[code]
    lying = _tilt(upright, rng.uniform(*turn), rng)
    grav = _orientation_path(t, upright, lying, impact - drop, impact + 0.1)
    # Free fall: the wrist feels only part of gravity while the body drops.
    scale = np.where((t > impact - drop) & (t < impact), rng.uniform(0.2, 0.5), 1.0)
    acc = grav * scale[:, None]
    peak = rng.uniform(3.5, 9.0) * (0.8 if code == "F02" else 1.0)
    hit = _unit(lying + 0.4 * rng.normal(size=3))
    acc += np.outer(_spike(t, impact, 0.06, peak), hit)
    for k in range(rng.integers(1, 3)):  # bounces, arm settling
        at = impact + 0.15 + 0.2 * k + rng.uniform(0, 0.1)
        acc += np.outer(_spike(t, at, 0.05, rng.uniform(0.6, 1.4)), _unit(rng.normal(size=3)))
    return acc


def _walking(t: FloatArray, rng: Rng) -> FloatArray:
    step = rng.uniform(1.6, 2.0)
    swing = np.radians(rng.uniform(15, 25)) * np.sin(np.pi * step * t)
    grav = np.column_stack([-np.cos(swing), np.zeros_like(t), np.sin(swing)])
    bounce = rng.uniform(0.15, 0.3) * np.sin(2 * np.pi * step * t) ** 2
    acc: FloatArray = grav + np.outer(bounce, [-1.0, 0.0, 0.0])
    return acc


def _jogging(t: FloatArray, rng: Rng) -> FloatArray:
    step = rng.uniform(2.5, 3.0)
    stop = DURATION_S - rng.uniform(2.3, 2.7)
    running = t < stop
    swing = np.where(running, np.radians(40) * np.sin(np.pi * step * t), 0.0)
    grav = np.column_stack([-np.cos(swing), np.zeros_like(t), np.sin(swing)])
    acc = grav.copy()
    for at in np.arange(0.3, stop, 1 / step):  # heel strikes
        acc += np.outer(_spike(t, at, 0.07, rng.uniform(2.5, 4.5)), [-1.0, 0.1, 0.2])
    return acc


def _sit_down_hard(t: FloatArray, rng: Rng) -> FloatArray:
    land = rng.uniform(2.4, 3.0)
    upright = _tilt(HANGING, rng.uniform(0, 10), rng)
    on_lap = _tilt(FOREARM_LEVEL, rng.uniform(0, 20), rng)
    grav = _orientation_path(t, upright, on_lap, land - 0.6, land + 0.3)
    dip = np.where((t > land - 0.4) & (t < land), 0.75, 1.0)  # the body lowers, not falls
    acc = grav * dip[:, None]
    acc += np.outer(_spike(t, land, 0.1, rng.uniform(0.6, 1.2)), [-1.0, 0.0, 0.3])
    return acc


def _bending(t: FloatArray, rng: Rng) -> FloatArray:
    down, hold = rng.uniform(1.5, 2.5), rng.uniform(1.0, 2.0)
    upright = _tilt(HANGING, rng.uniform(0, 10), rng)
    bent = _tilt(upright, rng.uniform(40, 70), rng)
    there = _orientation_path(t, upright, bent, down, down + 1.2)
    back = _orientation_path(t, bent, upright, down + 1.2 + hold, down + 2.4 + hold)
    return np.where((t < down + 1.2 + hold)[:, None], there, back)


def _clapping(t: FloatArray, rng: Rng) -> FloatArray:
    start, stop = rng.uniform(0.3, 0.6), rng.uniform(3.0, 3.5)
    rate = rng.uniform(2.0, 3.0)
    front = _tilt(FOREARM_LEVEL, rng.uniform(0, 20), rng)
    raised = _orientation_path(t, HANGING, front, start - 0.4, start)
    lowered = _orientation_path(t, front, HANGING, stop, stop + 0.6)
    acc = np.where((t < stop)[:, None], raised, lowered)
    for at in np.arange(start + 0.2, stop, 1 / rate):
        acc += np.outer(_spike(t, at, 0.03, rng.uniform(4.0, 8.0)), [0.0, 1.0, 0.1])
    return acc


GENERATORS: dict[str, Callable[[FloatArray, Rng], FloatArray]] = {
    "F01": lambda t, rng: _fall(t, rng, "F01"),
    "F02": lambda t, rng: _fall(t, rng, "F02"),
    "F03": lambda t, rng: _fall(t, rng, "F03"),
    "D01": _walking,
    "D03": _jogging,
    "D08": _sit_down_hard,
    "D15": _bending,
    "D20": _clapping,
}


def generate_trial(code: str, subject: int, rep: int, seed: int) -> FloatArray:
    """One trial, (n, 3) in g at HZ, deterministic in (code, subject, rep, seed)."""
    rng = np.random.default_rng([seed, subject, rep, int(code[1:]), ord(code[0])])
    t = np.arange(round(DURATION_S * HZ)) / HZ
    acc = GENERATORS[code](t, rng)
    return acc + rng.normal(0.0, 0.012, size=acc.shape)


def sisfall_lines(acc_g: FloatArray) -> str:
    """Nine integer columns per sample in the SisFall format."""
    adxl = np.round(acc_g * ADXL_COUNTS_PER_G).astype(int)
    mma = np.round(acc_g * MMA_COUNTS_PER_G).astype(int)
    gyro = np.zeros_like(adxl)  # not simulated: nothing here reads the gyroscope
    rows = np.hstack([adxl, gyro, mma])
    return "".join(",".join(map(str, r)) + ";\n" for r in rows.tolist())


def write_trials(out: Path, seed: int = 7, subjects: int = 3, reps: int = 1) -> list[Path]:
    """Write every code for every subject; returns the files written, in order."""
    written: list[Path] = []
    for s in range(1, subjects + 1):
        subject = f"SA{s:02d}"
        folder = out / subject
        folder.mkdir(parents=True, exist_ok=True)
        for code in sorted(GENERATORS):
            for rep in range(1, reps + 1):
                acc = generate_trial(code, s, rep, seed)
                path = folder / f"{code}_{subject}_R{rep:02d}.txt"
                path.write_text(sisfall_lines(acc), encoding="ascii")
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args(argv)
    files = write_trials(args.out, args.seed, args.subjects, args.reps)
    print(f"wrote {len(files)} trials under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
