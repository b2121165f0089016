"""A real ``airflow api-server`` process for tests (and the REST benchmarks), which can be stopped and restarted
on the same port.

:class:`ApiServer` runs ``airflow api-server`` (one worker unless told) on a fixed free loopback port with:

* SimpleAuthManager users ``viewer:viewer,admin:admin`` and a passwords file (:data:`PASSWORDS`);
* its own JWT secret;
* the store ``store_url`` as the Connection ``clickstream_default`` (``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``);
* the test session's Airflow metadata DB (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, initialised by the
  ``airflow_db`` fixture of ``conftest.py``; request that fixture before starting a server), or
  ``metadata_url`` (the bench gives each server its own, migrated);
* any ``extra_env`` on top (e.g. ``AIRFLOW__CLICKSTREAM__MAX_BULK_ITEMS``).

The environment is fixed when the object is built, so :meth:`ApiServer.restart` brings back the same
server (same port, same configuration). Output of every run is appended to :attr:`ApiServer.log_path`.

Usage::

    server = ApiServer(store_url, tmp_path)
    with server:                       # start(), and stop() at the end whatever happens
        token = server.token("admin")
        httpx.get(f"{server.base_url}/clickstream/session", ...)
        server.stop()                  # clients now get "connection refused"
        server.restart()               # same port, same env
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pytest

from tests.support.connections import airflow_conn_uri, free_port

#: Users of the server's SimpleAuthManager (``[core] simple_auth_manager_users``): name -> role.
USERS = {"viewer": "viewer", "admin": "admin"}
#: Their passwords (``[core] simple_auth_manager_passwords_file``).
PASSWORDS = {"viewer": "viewer-secret", "admin": "admin-secret"}
#: The server's ``[api_auth] jwt_secret`` (tests may sign tokens with it, e.g. an expired one).
JWT_SECRET = "clickstream-test-secret-" + "x" * 48
#: Seconds to wait for the server to answer ``GET /api/v2/version``.
STARTUP_TIMEOUT_S = 120
_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def stop_process_group(process: subprocess.Popen[Any], grace_s: float) -> None:
    """Stop ``process`` and everything it started (it leads its own process group): SIGTERM to the group, up to
    ``grace_s`` for the main process to exit, then SIGKILL to whatever is left of the group (workers must not
    keep a port or a folder). Returns once the main process has exited; a no-op on a finished group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=10)


class ApiServer:
    """An ``airflow api-server`` subprocess serving the clickstream API.

    :param store_url: SQLAlchemy URL of the session store (becomes ``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``).
    :param workdir: a directory for the server's ``AIRFLOW_HOME``, passwords file and log (created if
        missing; use a fresh one per server).
    :param extra_env: more environment variables, applied last (e.g. ``AIRFLOW__CLICKSTREAM__*`` keys).
    :param port: the port to listen on; default a free one, chosen once and kept across restarts.
    :param startup_timeout_s: how long :meth:`start` waits for the server to answer.
    :param workers: API-server worker processes (``--workers``).
    :param metadata_url: the Airflow metadata DB, already migrated; default the test session's
        (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` of this process).
    """

    def __init__(
        self,
        store_url: str,
        workdir: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        workers: int = 1,
        metadata_url: str | None = None,
    ) -> None:
        self.store_url = store_url
        self.workdir = Path(workdir)
        self.extra_env = dict(extra_env or {})
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.workers = workers
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "api-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: how many times the server was started
        self.starts = 0

        home = self.workdir / "airflow-home"
        home.mkdir(parents=True, exist_ok=True)
        passwords = self.workdir / "passwords.json"
        passwords.write_text(json.dumps(PASSWORDS))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__CORE__UNIT_TEST")}
        # by default the metadata DB that the `airflow_db` fixture initialised (conftest's AIRFLOW_HOME)
        metadata_url = metadata_url or os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
                "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
                "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": airflow_conn_uri(store_url),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.update(self.extra_env)
        self.env = env

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers (``pytest.fail`` with the log's tail if it does not)."""
        if self.running:
            raise RuntimeError(f"api-server already running (pid {self.process.pid})")  # type: ignore[union-attr]
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "airflow"),
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the server's process group (it may fork workers); SIGKILL it if it does not stop in 30 s.

        Returns once the process has exited; a no-op if it is not running.
        """
        if self.process is not None:
            stop_process_group(self.process, grace_s=30)

    def restart(self) -> ApiServer:
        """:meth:`stop` (if running), then :meth:`start` on the same port with the same environment."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ helpers

    def token(self, username: str) -> str:
        """A JWT for ``username`` (one of :data:`USERS`), from ``POST /auth/token`` like a service gets it."""
        answer = httpx.post(
            f"{self.base_url}/auth/token", json={"username": username, "password": PASSWORDS[username]}, timeout=10
        )
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["access_token"]

    def log_tail(self, chars: int = 5000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def _wait_until_up(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"api-server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/api/v2/version", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        pytest.fail(f"api-server not up after {self.startup_timeout_s} s:\n{self.log_tail()}")
