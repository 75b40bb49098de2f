"""Loaders for each dataset layout, the evaluation harness and `carewatch eval falls`."""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evaluation import fall_training
from evaluation.falls import (
    Alarm,
    Evaluation,
    Figures,
    cli_main,
    collect_candidates,
    evaluate,
    judge,
    replay,
)
from evaluation.loaders import (
    LayoutError,
    SkippedFile,
    Trial,
    detect_layout,
    load_trials,
)
from rules_engine.detectors.fall.features import FeatureWindows
from rules_engine.detectors.fall.model import shipped_model
from rules_engine.detectors.fall.signal_model import FallSignalModel, FallThresholds
from simulators.accel_trials import write_trials

SYNTHETIC = Path(__file__).parent / "data" / "synthetic_falls"


def trials_of(path: Path) -> tuple[list[Trial], list[SkippedFile]]:
    items = list(load_trials(path))
    return (
        [t for t in items if isinstance(t, Trial)],
        [s for s in items if isinstance(s, SkippedFile)],
    )


# ------------------------------------------------------------------ SisFall


def test_sisfall_layout_is_read_in_g(tmp_path: Path) -> None:
    subject = tmp_path / "SisFall_dataset" / "SE02"
    subject.mkdir(parents=True)
    # 9 columns, ';' line ends, padded like the originals; 256 counts = 1 g on the ADXL345.
    (subject / "F07_SE02_R03.txt").write_text(
        "  256,   0,  -128, 11, 12, 13, 1024, 0, -512;\n" * 3 + "  512, 0, 0, 0, 0, 0, 0, 0, 0;\n"
    )
    (subject / "D01_SE02_R01.txt").write_text("0,256,0,0,0,0,0,0,0;\n" * 4)
    (subject / "Readme.txt").write_text("not a trial")
    assert detect_layout(tmp_path) == "sisfall"
    trials, skipped = trials_of(tmp_path)
    assert skipped == []
    by_id = {t.trial_id: t for t in trials}
    fall, adl = by_id["F07_SE02_R03"], by_id["D01_SE02_R01"]
    assert fall.is_fall and fall.activity == "F07" and fall.subject == "SE02"
    assert not adl.is_fall and adl.activity == "D01"
    assert fall.hz == 200.0
    np.testing.assert_allclose(fall.xyz[0], [1.0, 0.0, -0.5])
    np.testing.assert_allclose(fall.xyz[3], [2.0, 0.0, 0.0])
    np.testing.assert_allclose(adl.xyz[:, 1], [1.0] * 4)


def test_corrupt_sisfall_file_is_skipped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "SA01").mkdir()
    (tmp_path / "SA01" / "F01_SA01_R01.txt").write_text("12,x,4,0,0,0,0,0,0;\n")
    (tmp_path / "SA01" / "D02_SA01_R01.txt").write_text("0,0,256,0,0,0,0,0,0;\n" * 5)
    trials, skipped = trials_of(tmp_path)
    assert [t.trial_id for t in trials] == ["D02_SA01_R01"]
    assert len(skipped) == 1 and skipped[0].path.endswith("F01_SA01_R01.txt")


# ------------------------------------------------------------------ UMAFall

UMAFALL_HEADER = """\
% Universidad de Malaga - ETSI de Telecomunicacion (Spain)
% Date: 2016-06-13 20:51:32
% ID: Subject_02_Fall_backwardFall_1
% Number of Sensors: 3
% Sensor_ID; Position; Type
% f8:95:c7:f3:ba:82; 0; RIGHTPOCKET; lge-LG-H815-5.1
% C4:BE:84:71:A5:02; 2; WAIST; SensorTag
% B0:B4:48:B8:77:03; 3; WRIST; SensorTag
% Sensor Types: Accelerometer = 0, Gyroscope = 1, Magnetometer = 2
% TimeStamp; Sample No; X-Axis; Y-Axis; Z-Axis; Sensor Type; Sensor ID
"""


def test_umafall_layout_takes_the_wrist_accelerometer(tmp_path: Path) -> None:
    rows = []
    for k in range(41):  # 2 s at 20 Hz, with rows of other sensors and types mixed in
        t = k * 50
        rows.append(f"{t};{k};0.5;-0.25;0.75;0;3")
        rows.append(f"{t};{k};9.0;9.0;9.0;1;3")  # wrist gyroscope
        rows.append(f"{t};{k};7.0;7.0;7.0;0;2")  # waist accelerometer
    name = "UMAFall_Subject_02_Fall_backwardFall_1_2016-06-13_20-51-32.csv"
    (tmp_path / name).write_text(UMAFALL_HEADER + "\n".join(rows) + "\n")
    adl = "UMAFall_Subject_11_ADL_Walking_3_2017-04-14_23-38-23.csv"
    (tmp_path / adl).write_text(
        UMAFALL_HEADER + "".join(f"{k * 50};{k};0;0;1;0;3\n" for k in range(30))
    )
    no_wrist = "UMAFall_Subject_03_ADL_Jogging_1_2017-04-14_23-38-23.csv"
    (tmp_path / no_wrist).write_text(UMAFALL_HEADER.replace("WRIST", "ANKLE") + "0;0;1;1;1;0;3\n")
    assert detect_layout(tmp_path) == "umafall"
    trials, skipped = trials_of(tmp_path)
    by_subject = {t.subject: t for t in trials}
    fall = by_subject["S02"]
    assert fall.is_fall and fall.activity == "backwardFall"
    assert fall.hz == 20.0
    np.testing.assert_allclose(fall.xyz, np.tile([0.5, -0.25, 0.75], (len(fall.xyz), 1)))
    assert not by_subject["S11"].is_fall and by_subject["S11"].activity == "Walking"
    assert len(skipped) == 1 and "WRIST" in skipped[0].reason


# ------------------------------------------------------------------ dev CSV


def test_dev_csv_gz_with_irregular_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "dev.csv.gz"
    lines = ["trial,subject,label,activity,t_ms,ax_g,ay_g,az_g"]
    # Uneven stamps and a duplicate, as the SensorTag writes them.
    for t in [111, 145, 150, 228, 260, 311, 360, 412, 460, 511]:
        lines.append(f"a,S01,FALL,forwardFall,{t},0,0,1")
    for t in range(0, 1000, 50):
        lines.append(f"b,S02,ADL,Walking,{t},1,0,0")
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    assert detect_layout(path) == "dev_csv"
    trials, skipped = trials_of(path)
    assert skipped == []
    a, b = trials
    assert (a.trial_id, a.is_fall, a.activity, a.subject) == ("a", True, "forwardFall", "S01")
    assert a.start_ms == 111 and a.hz == 22.0  # 10 samples over 400 ms
    np.testing.assert_allclose(a.xyz[:, 2], 1.0)
    assert (b.is_fall, b.hz, len(b.xyz)) == (False, 20.0, 20)


def test_unknown_layouts_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="no SisFall files"):
        detect_layout(tmp_path)
    other = tmp_path / "notes.csv"
    other.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(LayoutError, match="not the dev CSV"):
        detect_layout(other)
    with pytest.raises(LayoutError, match="no such file"):
        detect_layout(tmp_path / "missing")


# ------------------------------------------------------------------ harness and CLI


def test_shipped_synthetic_set_is_what_the_generator_writes(tmp_path: Path) -> None:
    written = write_trials(tmp_path, seed=7, subjects=3, reps=1)
    shipped = sorted(p.relative_to(SYNTHETIC) for p in SYNTHETIC.rglob("*.txt"))
    assert sorted(p.relative_to(tmp_path) for p in written) == shipped
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (SYNTHETIC / rel).read_bytes(), rel


def test_harness_on_the_synthetic_set() -> None:
    result = evaluate(load_trials(SYNTHETIC), FallThresholds()).as_dict()
    overall = result["overall"]
    assert overall["falls"] == 9 and overall["adl_trials"] == 15
    # every trial is accounted for: decided one way or the other, or undecided
    assert overall["detected"] + overall["missed"] + overall["falls_undecided"] == 9
    assert overall["adl_clean"] + overall["adl_alarm"] + overall["adl_undecided"] == 15
    assert overall["sensitivity"] >= 0.6 and overall["specificity"] == 1.0
    elderly = evaluate(load_trials(SYNTHETIC), FallThresholds.preset("elderly_80plus"))
    assert elderly.overall().as_dict()["sensitivity"] == 1.0
    # Latency: at least the seconds the detector waits after the impact, at most a window more.
    after = shipped_model().windows.after_ms / 1000
    assert after <= overall["latency_median_s"] <= overall["latency_p95_s"] <= after + 1.0
    codes = {row["group"] for row in result["by_activity"]}
    assert codes == {"F01", "F02", "F03", "D01", "D03", "D08", "D15", "D20"}
    assert {row["group"] for row in result["by_subject"]} == {"SA01", "SA02", "SA03"}


# ------------------------------------------------------------------ the rules that judge


def trial(is_fall: bool, seconds: float, peak_at_s: float | None = None, **kw: object) -> Trial:
    xyz = np.tile([-1.0, 0.0, 0.0], (round(seconds * 50), 1))
    if peak_at_s is not None:
        xyz[round(peak_at_s * 50)] = [-6.0, 0.0, 0.0]
    fields = {"trial_id": "t", "subject": "S01", "activity": "x", "start_ms": 0, **kw}
    return Trial(is_fall=is_fall, hz=50.0, xyz=xyz, **fields)  # type: ignore[arg-type]


def test_a_cut_short_trial_is_undecided_never_correct() -> None:
    adl = judge(trial(False, 10.0), "d", [], pending_ms=8_000.0)
    assert adl.outcome == "undecided"
    fall = judge(trial(True, 10.0, peak_at_s=8.0), "d", [], pending_ms=8_000.0)
    assert fall.outcome == "undecided"
    figures = Figures("x")
    figures.add(adl)
    figures.add(fall)
    d = figures.as_dict()
    assert (d["sensitivity"], d["specificity"], d["sensitivity_all"]) == (None, None, 0.0)
    assert (d["adl_undecided"], d["falls_undecided"]) == (1, 1)
    # the undecided tail is no activity time: false alarms there could not have been seen
    assert adl.activity_s == pytest.approx(8.0)
    # without anything pending the same trials are decided
    assert judge(trial(False, 10.0), "d", [], None).outcome == "clean"
    assert judge(trial(True, 10.0, peak_at_s=8.0), "d", [], None).outcome == "missed"


def test_alarms_outside_the_fall_window_are_false_alarms_also_in_fall_trials() -> None:
    fall = trial(True, 15.0, peak_at_s=10.0)  # the fall's window: 8.5 s to 15 s
    early = Alarm(impact_ms=3_000, raised_ms=7_000, probability=0.9)
    right = Alarm(impact_ms=12_000, raised_ms=16_000, probability=0.9)  # 2 s after the peak
    r = judge(fall, "d", [early, right], None)
    assert r.outcome == "detected" and r.detection == right
    assert r.false_alarms == (early,)
    assert r.latency_ms == 4_000  # from the impact nearest the alarm: its own
    # the activity time of a fall trial is what lies outside the fall's window
    assert r.activity_s == pytest.approx(8.5)
    figures = Figures("x")
    figures.add(r)
    d = figures.as_dict()
    assert (d["detected"], d["false_alarms"], d["precision"]) == (1, 1, 0.5)
    assert d["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5, abs=1e-4)
    late = Alarm(impact_ms=15_500, raised_ms=19_000, probability=0.9)
    assert judge(fall, "d", [late], None).outcome == "missed"


def test_an_annotated_fall_time_wins_over_the_hardest_impact() -> None:
    # The hardest hit (at 3 s) is a stumble; the annotation puts the fall at 10 s.
    fall = trial(True, 15.0, peak_at_s=3.0, fall_ms=10_000)
    on_peak = Alarm(impact_ms=3_000, raised_ms=7_000, probability=0.9)
    on_fall = Alarm(impact_ms=10_400, raised_ms=14_000, probability=0.9)
    assert judge(fall, "d", [on_peak], None).outcome == "missed"
    r = judge(fall, "d", [on_peak, on_fall], None)
    assert r.outcome == "detected" and r.false_alarms == (on_peak,)
    assert r.latency_ms == 4_000  # from the annotated impact


def test_dev_csv_fall_annotation_column(tmp_path: Path) -> None:
    path = tmp_path / "dev.csv"
    lines = ["trial,subject,label,activity,t_ms,ax_g,ay_g,az_g,fall_ms"]
    lines += [f"a,S01,FALL,f,{t},0,0,1,400" for t in range(0, 1000, 50)]
    lines += [f"b,S01,ADL,w,{t},0,0,1," for t in range(0, 1000, 50)]
    path.write_text("\n".join(lines) + "\n")
    a, b = trials_of(path)[0]
    assert (a.fall_ms, b.fall_ms) == (400, None)


def test_umafall_padding_lines_do_not_lose_the_file(tmp_path: Path) -> None:
    # Subject 13's files end in lines of bare semicolons; the samples before them count.
    rows = "".join(f"{k * 50};{k};0;0;1;0;3\n" for k in range(30)) + ";;;;;;\n" * 5
    name = "UMAFall_Subject_13_ADL_Walking_1_2017-04-14_23-38-23.csv"
    (tmp_path / name).write_text(UMAFALL_HEADER + rows)
    trials, skipped = trials_of(tmp_path)
    assert skipped == [] and [t.subject for t in trials] == ["S13"]
    assert len(trials[0].xyz) == 30


def test_candidate_replay_raises_the_alarms_the_streaming_detector_raises() -> None:
    # LOSO and training replay the second stage on recorded candidates; the figures are
    # only honest if that replay is the detector itself.
    # Candidates are recorded as training does (never alarming, every impact decided
    # late too), then replayed at each preset, with and without the late decision (the
    # shipped trees with a late decision 3.9 s after the impact: the trials are 6.5 s).
    model = replace(shipped_model(), windows=FeatureWindows(late_after_ms=3900.0))
    recording = replace(FallThresholds(), alarm_probability=1.0, late_decision=1.0)
    replays = late_decisions = 0
    for item in load_trials(SYNTHETIC):
        assert isinstance(item, Trial)
        tc = collect_candidates("", item, recording, model)
        late_decisions += sum(c.late for c in tc.candidates)
        probabilities = [c.probability for c in tc.candidates]
        for preset in ("standard", "elderly_80plus", "alone"):
            for late in (0.0, 1.0):
                th = replace(FallThresholds.preset(preset), late_decision=late)
                streamed = replay(item, FallSignalModel(th, model))
                replayed = tc.alarms(
                    probabilities, th.alarm_probability, th.refractory_ms, late=late > 0
                )
                assert list(streamed.alarms) == replayed, (item.trial_id, preset, late)
                assert streamed.pending_ms == tc.pending_ms
                replays += 1
    assert replays > 0 and late_decisions > 0


# ------------------------------------------------------------------ CLI


def test_cli_prints_the_tables_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    args = argparse.Namespace(path=[SYNTHETIC], profile="standard", json=out)
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    for column in ("sens", "und", "FA/h", "prec", "F1", "lat p95"):
        assert column in printed
    table_rows = [line.split()[0] for line in printed.splitlines()[1:] if line.strip()]
    assert {"F01", "D20", "ALL", "SA01", "synthetic_falls"} <= set(table_rows)
    figures = json.loads(out.read_text())
    assert figures["overall"]["falls"] == 9
    assert figures["thresholds"]["alarm_probability"] == FallThresholds().alarm_probability


def test_cli_profile_file_changes_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "strict.json"
    profile.write_text(json.dumps({"fall": {"impact_g": 50.0}}))
    out = tmp_path / "figures.json"
    assert cli_main(argparse.Namespace(path=[SYNTHETIC], profile=str(profile), json=out)) == 0
    assert json.loads(out.read_text())["overall"]["detected"] == 0


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(argparse.Namespace(path=[tmp_path], profile="standard", json=None)) == 2
    assert "no SisFall files" in capsys.readouterr().err
    assert cli_main(argparse.Namespace(path=[SYNTHETIC], profile="nobody", json=None)) == 2
    assert "unknown care profile" in capsys.readouterr().err


# ------------------------------------------------------------------ the shipped model

DEV_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "falls"
DEV_FILES = [DEV_DATA / "umafall_wrist_dev.csv.gz", DEV_DATA / "weda_wrist_dev.csv.gz"]


@pytest.mark.skipif(
    not all(p.is_file() for p in DEV_FILES),
    reason=f"the dev recordings are not at {DEV_DATA} (../shared/data/falls from the repo)",
)
def test_the_shipped_model_reproduces_its_recorded_loso_figures() -> None:
    """Leave-one-subject-out on both dev files at every recorded operating point gives
    the figures the model file says it gave (retraining must rewrite both together)."""
    model = shipped_model()
    recorded = model.meta["loso"]
    assert [f["file"] for f in model.meta["trained_on"]] == [p.name for p in DEV_FILES]
    tcs = fall_training.collect(DEV_FILES, FallThresholds())
    probabilities = fall_training.loso_probabilities(tcs)
    for point, threshold in model.operating_points.items():
        late = model.late_decision[point]
        results = fall_training.results_at(tcs, probabilities, threshold, 5000.0, late)
        got = fall_training.summary(Evaluation(results, []))
        assert set(got) == set(recorded[point])
        for group, figures in recorded[point].items():
            for key in ("detected", "missed", "falls_undecided", "adl_clean", "adl_alarm"):
                assert got[group][key] == figures[key], (point, group, key)
            assert got[group]["false_alarms"] == figures["false_alarms"], (point, group)
            assert got[group]["latency_median_s"] == figures["latency_median_s"]
