"""Run carewatch workers as real subprocesses against the test's private services.

End-to-end and crash tests use this: each worker is the `carewatch` command a deployment
runs, configured through CAREWATCH_* environment variables, so a test can kill -9 one and
start it again exactly as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr

from carewatch.settings import Settings
from harness.services import free_port, wait_port, wait_until

CAREWATCH = str(Path(sys.executable).with_name("carewatch"))
# A worker's start-up (imports) took over 10 s on the shared 2-core machine at a load
# average of 12: the benchmark stopped there, not for anything the system did.
START_TIMEOUT_S = 60.0


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREWATCH_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"CAREWATCH_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


def with_fake_providers(settings: Settings) -> Settings:
    """Settings whose provider URLs and ack server point at free loopback ports."""
    fake = free_port()
    ack = free_port()
    return settings.model_copy(
        update={
            "aliyun_sms_endpoint": f"http://127.0.0.1:{fake}/aliyun-sms/",
            "wecom_base_url": f"http://127.0.0.1:{fake}/wecom",
            "ack_port": ack,
            "ack_base_url": f"http://127.0.0.1:{ack}",
        }
    )


class Pipeline:
    """The worker processes of one test."""

    def __init__(self, settings: Settings, logdir: Path) -> None:
        self.settings = settings
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._starts: dict[str, int] = {}

    @property
    def fake_url(self) -> str:
        return self.settings.aliyun_sms_endpoint.rsplit("/aliyun-sms/", 1)[0]

    def start(
        self, name: str, instance: int | None = None, **overrides: object
    ) -> subprocess.Popen[bytes]:
        """Start worker `name`; a second copy of one worker needs its own `instance` number
        and is then known (to kill, tail, procs) as f"{name}-{instance}"."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        key = name if instance is None else f"{name}-{instance}"
        env = settings_env(settings)
        if instance is not None:
            env["CAREWATCH_INGEST_INSTANCE"] = str(instance)  # its own MQTT client id
        self._starts[key] = self._starts.get(key, 0) + 1
        log = open(self.logdir / f"{key}.{self._starts[key]}.log", "wb")
        proc = subprocess.Popen([CAREWATCH, name], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[key] = proc
        if name == "fake-providers":
            wait_port(int(self.fake_url.rsplit(":", 1)[1]), START_TIMEOUT_S)
        if name == "ack-server":
            wait_port(settings.ack_port, START_TIMEOUT_S)
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(10)

    def assert_running(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}: {self.tail(name)}"

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.{self._starts.get(name, 1)}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def records(self) -> list[dict[str, object]]:
        response = httpx.get(f"{self.fake_url}/_records", timeout=5)
        response.raise_for_status()
        data = response.json()
        return list(data["records"] if isinstance(data, dict) else data)

    def wait_records(
        self, predicate: object, count: int, timeout: float = 20.0
    ) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []

        def enough() -> bool:
            nonlocal found
            self.assert_running()
            found = [r for r in self.records() if predicate(r)]  # type: ignore[operator]
            return len(found) >= count

        wait_until(enough, timeout, f"{count} provider record(s)")
        return found

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
