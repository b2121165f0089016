"""A real ``airflow api-server`` process serves the clickstream API over HTTP.

The server runs with SimpleAuthManager users from ``[core] simple_auth_manager_users`` and a passwords
file, the test's Airflow metadata DB, and the store connection from ``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``.
The test logs in with ``POST /auth/token`` like a service would, then drives the API document's three
endpoints. The server (and its workers) are terminated at the end, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.apiserver import PASSWORDS, ApiServer
from tests.support.bodies import click, session_body

pytestmark = pytest.mark.slow

_PASSWORDS = PASSWORDS


@pytest.fixture
def api_server_process(airflow_db: None, store_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    """A running :class:`~apiserver.ApiServer` on ``store_url`` (stopped at the end, whatever happens)."""
    with ApiServer(store_url, tmp_path / "api-server") as server:
        yield server
    assert not server.running


@pytest.fixture
def api_server(api_server_process: ApiServer) -> str:
    """Base URL of a running ``airflow api-server`` on a free loopback port."""
    return api_server_process.base_url


def _token(base_url: str, username: str) -> str:
    answer = httpx.post(
        f"{base_url}/auth/token", json={"username": username, "password": _PASSWORDS[username]}, timeout=10
    )
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
            assert (
                http.post("/session/events", json={"session_id": "sess-1", "events": [click()]}, headers=admin).json()[
                    "stored"
                ]
                == 1
            )

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
