"""Deployment files agree with the code and with each other: every command the compose
file and the systemd units run is a real `carewatch` command, every worker Prometheus
scrapes exists under the name and port the targets list, and the units are valid."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from carewatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "infra/deploy"
UNITS = DEPLOY / "systemd"
PROM_DIR = ROOT / "infra/prometheus"
WORKER_JOBS = {  # Prometheus job -> carewatch command
    "carewatch-ingest": "ingest",
    "carewatch-rules": "rules",
    "carewatch-notifier": "notifier",
    "carewatch-ack-server": "ack-server",
    "carewatch-operator-api": "operator-api",
    "carewatch-provider-callbacks": "provider-callbacks",
}


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))
    return doc


def is_cli_command(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def test_cli_check_itself_rejects_unknown_commands() -> None:
    assert is_cli_command(["ingest"]) and not is_cli_command(["ingestt"])


def carewatch_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("carewatch:")
    }


def test_compose_runs_the_whole_stack_from_one_image() -> None:
    services = compose()["services"]
    images = " ".join(s.get("image", "") for s in services.values())
    for infra in ("mosquitto|emqx", "redis|nats", "timescaledb", "prometheus", "grafana"):
        assert re.search(infra, images), f"no {infra} service"
    workers = carewatch_services()
    assert {s["build"]["dockerfile"] for s in workers.values()} == {"infra/deploy/Dockerfile"}
    assert (ROOT / "infra/deploy/Dockerfile").exists()
    for name, svc in workers.items():
        assert is_cli_command(svc["command"]), (
            f"{name}: carewatch {svc['command']} is not a command"
        )
    commands = {tuple(s["command"]) for s in workers.values()}
    assert {(c,) for c in WORKER_JOBS.values()} <= commands
    assert ("db", "migrate") in commands


def test_compose_bind_mounts_exist() -> None:
    for name, svc in compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} missing"


def test_every_prometheus_target_is_a_compose_worker_of_that_job() -> None:
    workers = carewatch_services()
    jobs = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text("utf-8"))["scrape_configs"]
    scraped: set[str] = set()
    for job in jobs:
        if job["job_name"] not in WORKER_JOBS:
            continue
        for sd_file in job["file_sd_configs"][0]["files"]:
            for group in yaml.safe_load((PROM_DIR / sd_file).read_text("utf-8")):
                for target in group["targets"]:
                    host, port = target.rsplit(":", 1)
                    svc = workers.get(host)
                    assert svc, f"{target}: no compose service {host}"
                    assert svc["command"] == [WORKER_JOBS[job["job_name"]]], target
                    assert svc["environment"]["CAREWATCH_METRICS_PORT"] == port, target
                    scraped.add(host)
    running = {n for n, s in workers.items() if s["command"][0] in WORKER_JOBS.values()}
    assert running == scraped, f"workers nobody scrapes: {running - scraped}"


def unit_exec(path: Path) -> list[str]:
    (line,) = [ln for ln in path.read_text("utf-8").splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_every_worker_has_a_systemd_template_running_its_command() -> None:
    for command in WORKER_JOBS.values():
        unit = UNITS / f"carewatch-{command}@.service"
        argv = unit_exec(unit)
        assert argv[0] == "/opt/carewatch/venv/bin/carewatch"
        assert argv[1:] == [command]
        assert "CAREWATCH_METRICS_PORT=%i" in unit.read_text("utf-8")
    assert is_cli_command(unit_exec(UNITS / "carewatch-migrate.service")[1:])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_units_verify_cleanly(tmp_path: Path) -> None:
    # The units as installed, with ExecStart pointing at this checkout's entry point.
    shutil.copytree(UNITS, tmp_path, dirs_exist_ok=True)
    carewatch = str(Path(sys.executable).with_name("carewatch"))
    to_check = []
    for unit in sorted(tmp_path.glob("carewatch*")):
        if unit.is_dir():
            continue
        text = unit.read_text("utf-8").replace("/opt/carewatch/venv/bin/carewatch", carewatch)
        name = unit.name.replace("@.service", "@9101.service")  # an instance of each template
        (tmp_path / name).write_text(text, "utf-8")
        to_check.append(str(tmp_path / name))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *to_check],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # unknown keys and bad values are only warnings: any output is a defect
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_deployment_doc_names_only_files_that_exist() -> None:
    doc = (ROOT / "docs/deployment.md").read_text("utf-8")
    paths = set(re.findall(r"(?<![\w/.-])(?:infra|docs|carewatch|bench)/[\w./@-]+\w", doc))
    assert paths, "docs/deployment.md names no files"
    made_by_the_operator = {"infra/deploy/carewatch.env"}  # git-ignored, from the .example
    missing = sorted(p for p in paths - made_by_the_operator if not (ROOT / p).exists())
    assert not missing, missing
