"""`carewatch demo` stops at once, saying why, when a port it must listen on is taken."""

from __future__ import annotations

import socket
import subprocess

from carewatch.settings import Settings
from tests.pipeline import CAREWATCH, settings_env
from tests.services import free_port


def test_demo_fails_fast_naming_the_taken_port(settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        s = settings.model_copy(
            update={
                "ack_port": port,
                "operator_port": free_port(),
                "aliyun_sms_endpoint": f"http://127.0.0.1:{free_port()}/aliyun-sms/",
            }
        )
        done = subprocess.run(
            [CAREWATCH, "demo"], env=settings_env(s), capture_output=True, timeout=60, text=True
        )
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 (ack server)" in done.stdout
    assert "CAREWATCH_ACK_PORT" in done.stdout
    assert "ledger" not in done.stdout  # stopped before touching the demo database
