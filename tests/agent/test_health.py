"""Health checks of each kind, run for real: commands, systemd units, HTTP probes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from fleetwarden.agent.health import CommandHealthChecker
from fleetwarden.errors import HealthCheckFailed
from fleetwarden.protocol.device import HealthCheck


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probe_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _check(**kind) -> None:
    CommandHealthChecker().check([HealthCheck(**kind, timeout_seconds=5)], {})


def test_commands_pass_on_exit_zero_and_name_the_failure():
    _check(command=["true"])
    with pytest.raises(
        HealthCheckFailed, match="'sh -c echo broken; exit 3' exited \\(3\\): broken"
    ):
        _check(command=["sh", "-c", "echo broken; exit 3"])


def test_http_probes_need_a_2xx(probe_url):
    _check(http=f"{probe_url}/ok")
    with pytest.raises(HealthCheckFailed, match="answered 503"):
        _check(http=f"{probe_url}/down")
    with pytest.raises(HealthCheckFailed, match="failed"):
        _check(http="http://127.0.0.1:9/nothing-listens")


def test_an_inactive_or_unknown_systemd_unit_fails_by_name():
    with pytest.raises(HealthCheckFailed, match=r"systemd unit no-such-unit\.service"):
        _check(systemd_unit="no-such-unit.service")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"command": ["true"], "http": "http://x/"},
        {"systemd_unit": "a b"},
        {"http": "ftp://x/"},
    ],
)
def test_a_check_is_exactly_one_valid_kind(body):
    with pytest.raises(ValidationError):
        HealthCheck.model_validate(body)
