"""Prometheus config and rules: promtool checks and unit tests, and a real Prometheus
scraping real carewatch workers that evaluates every recording rule, every alerting rule
and every PromQL query of the Grafana wall.

Needs the Debian package `prometheus` (it ships both `prometheus` and `promtool`);
`./run test` installs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from carewatch.settings import Settings
from harness.services import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "infra/prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((ROOT / "infra/grafana/dashboards").glob("*.json"))
WORKER_JOBS = {  # scrape job -> `carewatch` command
    "carewatch-ingest": "ingest",
    "carewatch-rules": "rules",
    "carewatch-notifier": "notifier",
    "carewatch-ack-server": "ack-server",
    "carewatch-operator-api": "operator-api",
    "carewatch-provider-callbacks": "provider-callbacks",
}
APT_HINT = (
    "install the Debian package 'prometheus' (ships prometheus and promtool; ./run test does)"
)


def binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if Path(p).exists()), None
    )


PROMETHEUS = binary("prometheus")
PROMTOOL = binary("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=f"promtool not found: {APT_HINT}")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason=f"prometheus not found: {APT_HINT}"
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for f in RULE_FILES for g in load_yaml(f)["groups"] for rule in g["rules"]]


def dashboard_promql() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARD_FILES:
        for panel in json.loads(path.read_text("utf-8"))["panels"]:
            for target in panel["targets"]:
                if "expr" in target:
                    found.append((f"{path.stem}/{panel['title']}", target["expr"]))
    return found


# --------------------------------------------------------------------------------------
# Static checks
# --------------------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert PROMTOOL
    config = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    assert f"{len(RULE_FILES)} rule files found" in config.stdout
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_rules_unit_tests_pass() -> None:
    assert PROMTOOL
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "tests/pipeline_rules_test.yml"],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # every alerting rule has at least one case where it is expected to fire
    tests = load_yaml(PROM_DIR / "tests/pipeline_rules_test.yml")["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    untested = (
        {r["alert"] for r in rules() if "alert" in r}
        - fired
        - {
            "CarewatchIngestRejectsHigh",  # the ratio itself is unit-tested as a recording rule
            "CarewatchE2ELatencyHigh",  # idem (p99)
        }
    )
    assert not untested, f"alerting rules without a firing test: {sorted(untested)}"


def test_every_worker_has_a_file_sd_scrape_job() -> None:
    jobs = {j["job_name"]: j for j in load_yaml(PROM_DIR / "prometheus.yml")["scrape_configs"]}
    assert set(WORKER_JOBS) <= set(jobs)
    for job in WORKER_JOBS:
        (sd,) = jobs[job]["file_sd_configs"]
        for name in sd["files"]:
            targets = load_yaml(PROM_DIR / name)
            assert targets and all(t["targets"] for t in targets), name


def test_the_last_escalation_step_alert_does_not_assume_a_step_number() -> None:
    """Imported policies have any number of steps: the rule reads the notifier's own
    'reached the last step' counter, never a step label."""
    (rule,) = [r for r in rules() if r.get("alert") == "CarewatchEscalationReachedLastStep"]
    assert "carewatch_escalation_last_step_total" in rule["expr"]
    assert "step=" not in rule["expr"]


# --------------------------------------------------------------------------------------
# A real Prometheus scraping real workers
# --------------------------------------------------------------------------------------


def missing_worker_modules() -> list[str]:
    modules = (
        "ingest.worker",
        "rules_engine.worker",
        "notifier.worker",
        "notifier.ack_app",
        "simulators.fake_providers.server",
        "registry.importer",
    )
    return [m for m in modules if importlib.util.find_spec(m) is None]


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        assert PROMETHEUS
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = load_yaml(PROM_DIR / "prometheus.yml")
        # the shipped config, with test intervals, absolute rule paths and our targets
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(f) for f in RULE_FILES]
        for job in config["scrape_configs"]:
            if job["job_name"] in targets:
                sd = workdir / f"{job['job_name']}.yml"
                sd.write_text(
                    yaml.safe_dump([{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}])
                )
                job["file_sd_configs"] = [{"files": [str(sd)]}]
            else:
                job["static_configs"] = [{"targets": [f"127.0.0.1:{self.port}"]}]
        conf = workdir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self._log_file = self.log.open("wb")
        self.popen = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={conf}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        wait_until(self.ready, 30, "prometheus ready")

    def ready(self) -> bool:
        assert self.popen.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log_file.close()


def finite_values(result: list[dict[str, Any]]) -> bool:
    return bool(result) and all(math.isfinite(float(r["value"][1])) for r in result)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"prom-test-{time.time_ns()}") as c:
        for topic_name, payload in messages:
            await c.publish(topic_name, payload, qos=1)


@pytest.fixture
def live(settings: Settings, tmp_path: Path) -> Iterator[tuple[Prometheus, Any, Settings]]:
    if PROMETHEUS is None:
        pytest.skip(f"prometheus not found: {APT_HINT}")
    missing = missing_worker_modules()
    if missing:
        pytest.skip(f"workers not runnable yet, missing modules: {', '.join(missing)}")
    from harness.pipeline import Pipeline, with_fake_providers
    from registry.importer import import_files
    from tests.ledger import write_ledger

    s = with_fake_providers(settings).model_copy(update={"escalation_wait_s": 600.0})
    report = import_files(s.database_url, write_ledger(tmp_path / "ledger"))
    assert not report.errors, report.errors
    ports = {job: free_port() for job in WORKER_JOBS}
    pipeline = Pipeline(s, tmp_path)
    prometheus: Prometheus | None = None
    try:
        pipeline.start("fake-providers")
        for job, command in WORKER_JOBS.items():
            # the web servers also need a free port of their own
            own = {
                "operator-api": {"operator_port": free_port()},
                "provider-callbacks": {"callbacks_port": free_port()},
            }.get(command, {})
            pipeline.start(command, metrics_port=ports[job], **own)
        prometheus = Prometheus(tmp_path, ports)
        yield prometheus, pipeline, s
    finally:
        if prometheus:
            prometheus.stop()
        pipeline.stop_all()


@pytest.mark.slow
def test_prometheus_evaluates_every_rule_and_dashboard_query_on_real_workers(
    live: tuple[Prometheus, Any, Settings],
) -> None:
    import msgspec

    from carewatch.messages import DeviceEvent, Telemetry
    from carewatch.topics import topic

    prom, pipeline, s = live
    seq = time.time_ns() // 1_000_000

    def msg(device: str, body: msgspec.Struct, kind: str = "telemetry") -> tuple[str, bytes]:
        return topic(device, kind), msgspec.json.encode(body)  # type: ignore[arg-type]

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    def all_scraped() -> bool:
        pipeline.assert_running()
        up = {r["metric"]["job"] for r in prom.query("up == 1")}
        return set(WORKER_JOBS) <= up

    wait_until(all_scraped, 30, "every worker scraped")

    # ingest is ready once it has stored a probe (its MQTT subscription may take a moment)
    def probe_stored() -> bool:
        nonlocal seq
        seq += 1
        probe = msg("WB0002", Telemetry(v=1, seq=seq, ts=now_ms(), hr=70))
        asyncio.run(publish(s.mqtt_port, [probe]))
        with psycopg.connect(s.database_url) as conn:
            return conn.execute("SELECT 1 FROM telemetry LIMIT 1").fetchone() is not None

    wait_until(probe_stored, 30, "ingest to store a probe message")

    # round 1: telemetry, a duplicate, a malformed message and an SOS
    seq += 1
    telemetry = msg("WB0002", Telemetry(v=1, seq=seq, ts=now_ms(), hr=70, battery=80))
    seq += 1
    sos = msg("WB0001", DeviceEvent(v=1, seq=seq, ts=now_ms(), type="sos"), "event")
    bad = (topic("WB0002", "telemetry"), b'{"v": 1, "seq": "not a number"}')
    asyncio.run(publish(s.mqtt_port, [telemetry, telemetry, bad, sos]))
    wait_until(
        lambda: (
            bool(prom.query("carewatch_e2e_latency_seconds_count"))
            and bool(prom.query("carewatch_ingest_rejects_total"))
            and bool(prom.query("carewatch_ingest_duplicates_total > 0"))
        ),
        45,
        "round 1 (SOS notified, reject and duplicate counted) scraped",
    )

    # round 2, after Prometheus has seen round 1: rates and quantiles get real values
    seq += 1
    sos2 = msg("WB0002", DeviceEvent(v=1, seq=seq, ts=now_ms(), type="sos"), "event")
    seq += 1
    more = msg("WB0001", Telemetry(v=1, seq=seq, ts=now_ms(), hr=72, battery=79))
    asyncio.run(publish(s.mqtt_port, [sos2, more, bad]))

    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    queries = [(f"record {name}", name) for name in recorded] + dashboard_promql()
    assert len(queries) > len(recorded), "no PromQL in the dashboards"
    pending = dict(queries)

    def all_have_data() -> bool:
        pipeline.assert_running()
        for what, expr in list(pending.items()):
            # an invalid expression fails in prom.query, not silently
            if finite_values(prom.query(expr)):
                del pending[what]
        return not pending

    try:
        wait_until(all_have_data, 90, "every recording rule and dashboard query to return data")
    except AssertionError as exc:
        seen = {what: prom.query(expr) for what, expr in pending.items()}
        raise AssertionError(f"{exc}; without data: {seen}") from None

    # every rule group was evaluated without error
    groups = prom.api("rules")["groups"]
    evaluated = {r["name"]: r for g in groups for r in g["rules"]}
    expected = {r.get("record") or r["alert"] for r in rules()}
    assert set(evaluated) == expected
    broken = {n: r["lastError"] for n, r in evaluated.items() if r["health"] != "ok"}
    assert not broken, broken
    # the healthy pipeline does not page anyone about notification failures
    firing = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
    assert "CarewatchNotificationFailures" not in firing
