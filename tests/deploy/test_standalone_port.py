"""The README's ``./dev standalone`` on a port other than 8080 runs a DAG to the end (issue 27).

``AIRFLOW__API__PORT=<free port> ./dev standalone`` is started as the README says, in a temporary demo
folder (``CLICKSTREAM_DEMO_HOME``, so the developer's ``.local/demo`` is not touched). Once the banner is
printed, the test seeds a few synthetic sessions through the clickstream REST API on that port, triggers
``clickstream_release`` through Airflow's REST API (token from ``POST /auth/token``, user admin / admin)
and waits for the run to succeed: its tasks reach the Execution API only if the URL Airflow gives them
follows the port. Every process it started (one process group) is stopped at the end, whatever happens.

About 55 s on a quiet 2-core machine (40 s of it Airflow starting, 15 s the run), about 3 minutes when
the cores are busy; bounded by ``STARTUP_TIMEOUT_S`` and ``RUN_TIMEOUT_S``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from clickstream.client import ClickstreamClient
from clickstream.synthetic import generate
from tests.support import REPO_ROOT
from tests.support.apiserver import stop_process_group
from tests.support.connections import free_port

pytestmark = pytest.mark.slow

DAG_ID = "clickstream_release"
SESSIONS = 12
#: Seconds for ``./dev standalone`` to answer on its port and print the banner.
STARTUP_TIMEOUT_S = 240
#: Seconds for the DAG to be parsed and the triggered run to end.
RUN_TIMEOUT_S = 240


def _standalone_env(home: Path, port: int) -> dict[str, str]:
    """A new user's environment: none of the test session's Airflow settings, the port overridden."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "CLICKSTREAM_DEMO_HOME": str(home),
            "AIRFLOW__API__PORT": str(port),
            # No scheduled run next to the triggered one (the DAG runs @daily by default): the triggered run
            # must be the one that releases the seeded batch.
            "AIRFLOW__CLICKSTREAM__RELEASE_SCHEDULE": "",
        }
    )
    return env


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"({path} does not exist)"


class _Standalone:
    """The running ``./dev standalone``: its URL, output, log, and Airflow REST calls with a token."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, home: Path, out: Path) -> None:
        self.process = process
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.home = home
        self.out = out
        self.log = home / "logs" / "standalone.log"
        self.headers: dict[str, str] = {}

    def diagnostics(self) -> str:
        return f"--- ./dev standalone output ---\n{_tail(self.out, 3000)}\n--- {self.log} ---\n{_tail(self.log)}"

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"./dev standalone exited with {self.process.returncode}\n{self.diagnostics()}")
            if "is running (standalone" in _tail(self.out):  # the banner: printed once the API server answers
                return
            time.sleep(1)
        pytest.fail(f"./dev standalone did not come up within {STARTUP_TIMEOUT_S} s\n{self.diagnostics()}")

    def login(self) -> None:
        answer = httpx.post(f"{self.base}/auth/token", json={"username": "admin", "password": "admin"}, timeout=30)
        assert answer.status_code in (200, 201), answer.text
        self.headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def api(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base}/api/v2{route}", headers=self.headers, timeout=30, **kwargs)


@pytest.fixture
def standalone(tmp_path: Path):
    """``AIRFLOW__API__PORT=<free port> ./dev standalone`` in a temporary demo folder; stopped at the end."""
    port = free_port()
    assert port != 8080
    home = tmp_path / "demo"
    out = tmp_path / "dev-standalone.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [str(REPO_ROOT / "dev"), "standalone"],
            cwd=REPO_ROOT,
            env=_standalone_env(home, port),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the stop below reaches every component
        )
    try:
        yield _Standalone(process, port, home, out)
    finally:
        stop_process_group(process, grace_s=15)  # quick rather than graceful: the folder is a temporary one


def _seed(base: str, n: int) -> tuple[str, int]:
    """Register ``n`` synthetic sessions with their events through the clickstream REST API; returns the
    collecting batch and how many sessions it got."""
    now_ms = int(time.time() * 1000)
    batches: dict[str, int] = {}
    with ClickstreamClient(base, username="admin", password="admin", timeout=30) as client:
        for s in generate(n, seed=27, start_ms=now_ms - 15 * 60_000, span_ms=10 * 60_000, id_prefix="port27-"):
            registered = client.register_session(s.session)
            assert registered.batch_id is not None
            batches[registered.batch_id] = batches.get(registered.batch_id, 0) + 1
            if s.events:
                client.push_events(s.session["session_id"], s.events)
    assert len(batches) == 1, batches
    return next(iter(batches.items()))


@pytest.mark.timeout(STARTUP_TIMEOUT_S + RUN_TIMEOUT_S + 120)
def test_standalone_on_another_port_runs_clickstream_release(standalone: _Standalone) -> None:
    started = time.monotonic()
    standalone.wait_until_up()
    up_s = time.monotonic() - started
    banner = standalone.out.read_text(errors="replace")
    assert f"http://localhost:{standalone.port}/ " in banner, banner  # the UI's URL the README shows
    assert f"Execution API for tasks: http://127.0.0.1:{standalone.port}/execution/" in banner, banner

    batch_id, sessions = _seed(standalone.base, SESSIONS)
    standalone.login()

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while standalone.api("GET", f"/dags/{DAG_ID}").status_code != 200:  # until the DAG processor parsed it
        assert time.monotonic() < deadline, f"{DAG_ID} not parsed in time\n{standalone.diagnostics()}"
        time.sleep(1)
    unpaused = standalone.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    assert unpaused.status_code == 200, unpaused.text
    triggered = standalone.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"shards": 1}})
    assert triggered.status_code == 200, triggered.text
    run_id = triggered.json()["dag_run_id"]

    state = None
    while time.monotonic() < deadline:
        state = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(2)
    tasks = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    states = {(t["task_id"], t["map_index"]): (t["state"], t["try_number"]) for t in tasks}
    assert state == "success", f"run {run_id}: {state}, tasks {states}\n{standalone.diagnostics()}"
    assert all(s == ("success", 1) for s in states.values()), states  # no task needed a retry

    with ClickstreamClient(standalone.base, username="admin", password="admin", timeout=30) as client:
        batch = client.get_batch_summary(batch_id)
    assert batch.status == "released"
    assert batch.release_id == f"{DAG_ID}/{run_id}"
    assert batch.sessions == sessions
    print(f"standalone up in {up_s:.0f} s; run {run_id} succeeded {time.monotonic() - started:.0f} s after start")
