"""A real ``airflow api-server`` process serves the clickstream API over HTTP.

The server runs with SimpleAuthManager users from ``[core] simple_auth_manager_users`` and a passwords
file, the test's Airflow metadata DB, and the store connection from ``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``.
The test logs in with ``POST /auth/token`` like a service would, then drives the API document's three
endpoints. The server (and its workers) are terminated at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from test_api import airflow_conn_uri, click, free_port, session_body

pytestmark = pytest.mark.slow

_PASSWORDS = {"viewer": "viewer-secret", "admin": "admin-secret"}
_STARTUP_TIMEOUT_S = 120


def _wait_until_up(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"api-server exited with {process.returncode}:\n{log_path.read_text()[-5000:]}")
        try:
            if httpx.get(f"{base_url}/api/v2/version", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"api-server not up after {_STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-5000:]}")


def _terminate(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it forks workers), SIGKILL it if it does not stop."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def api_server(airflow_db: None, store_url: str, tmp_path: Path) -> Iterator[str]:
    """Base URL of a running ``airflow api-server`` on a free loopback port."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps(_PASSWORDS))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__CORE__UNIT_TEST")}
    env.update({
        "AIRFLOW_HOME": str(home),
        # the metadata DB that the `airflow_db` fixture initialised (conftest's AIRFLOW_HOME)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer,admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "clickstream-test-secret-" + "x" * 48,
        "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": airflow_conn_uri(store_url),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    log_path = tmp_path / "api-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, base_url, log_path)
        yield base_url
    finally:
        _terminate(process)
    assert process.returncode is not None


def _token(base_url: str, username: str) -> str:
    answer = httpx.post(f"{base_url}/auth/token", json={"username": username, "password": _PASSWORDS[username]},
                        timeout=10)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["access_token"]


class TestRealApiServer:
    def test_service_logs_in_and_uses_the_three_endpoints(self, api_server: str) -> None:
        admin = {"Authorization": f"Bearer {_token(api_server, 'admin')}"}
        viewer = {"Authorization": f"Bearer {_token(api_server, 'viewer')}"}
        with httpx.Client(base_url=f"{api_server}/clickstream", timeout=15) as http:
            document = http.get("/openapi.json")
            assert document.headers["content-type"].startswith("application/json")  # mounted, not the UI
            assert "/batch/sessions" in document.json()["paths"]
            assert http.get("/batch/sessions", params={"batch_id": "b"}).status_code == 401

            registered = http.post("/session", json=session_body("sess-1"), headers=admin)
            assert registered.status_code == 200, registered.text
            batch_id = registered.json()["batch_id"]
            assert http.post("/session/events", json={"session_id": "sess-1", "events": [click()]},
                             headers=admin).json()["stored"] == 1

            marked = http.post("/session/use-for-improvement", json={"session_id": "sess-1"}, headers=admin)
            assert marked.json() == {"session_id": "sess-1", "status": "marked", "reason": None}

            assert http.post("/batch/release", json={"release_id": "release-v1"}, headers=viewer).status_code == 403
            released = http.post("/batch/release", json={"release_id": "release-v1"}, headers=admin)
            assert released.status_code == 200
            assert released.json()["batch_id"] == batch_id and released.json()["release_id"] == "release-v1"

            page = http.get("/batch/sessions", params={"batch_id": batch_id, "limit": 10}, headers=viewer)
            assert page.status_code == 200
            assert page.json()["last_number"] == registered.json()["session_number"]
            assert [s["session_id"] for s in page.json()["sessions"]] == ["sess-1"]
            assert page.json()["sessions"][0]["events"][0]["event_id"] == "evt-1"
