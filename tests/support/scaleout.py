"""A scaled-out Airflow on loopback for tests: a Redis broker, an S3-compatible object store, and a
CeleryExecutor cluster (API server, scheduler, DAG processor, Celery workers) on PostgreSQL metadata.

No pytest in here except through :class:`~tests.support.apiserver.ApiServer` (reused for the API server), so a
script can drive it too::

    with RedisServer(tmp / "redis") as redis, MotoS3(tmp / "s3") as s3:
        s3.create_bucket("lake", versioned=True)
        cluster = CeleryCluster(tmp / "airflow", meta_url=..., store_url=..., broker_url=redis.url,
                                extra_env={"AIRFLOW_CONN_LAKE": s3.airflow_connection()})
        with cluster:                                  # migrate, start every process, wait until ready
            cluster.unpause("clickstream_release")
            run_id = cluster.trigger("clickstream_release", {"shards": 4, "base_path": "s3://lake@lake/x"})
            cluster.wait_for_run("clickstream_release", run_id)

What each piece is:

* :class:`RedisServer`: Debian's ``redis-server`` on ``127.0.0.1:<free port>``, no persistence, its directory
  and log in the given folder.
* :class:`MotoS3`: ``moto_server`` (moto's S3 in server mode) on ``127.0.0.1:<free port>``; buckets are created
  with boto3 (optionally versioned, which lets a test count how often each object was written); the
  Airflow connection (``conn_type`` ``aws`` with ``endpoint_url``) and pandas' ``storage_options`` that reach it.
* :class:`CeleryCluster`: ``airflow db migrate`` on the PostgreSQL metadata database, then ``airflow api-server``
  (the Execution API the workers call, and the REST API the test calls), ``airflow scheduler``,
  ``airflow dag-processor`` and one ``airflow celery worker`` per name, each with its own Celery node name and
  its own task-instance hostname (:mod:`tests.support.worker_hostname`), as on separate machines. All share one
  environment (``AIRFLOW_HOME`` under the folder, the same JWT secret, connections from ``AIRFLOW_CONN_*``).

Every process runs in its own process group, logs to a file in the folder, and is stopped (SIGTERM, then
SIGKILL after a bounded wait) by ``stop()``, which the ``with`` blocks call whatever happens. Every wait is
bounded. :meth:`CeleryCluster.diagnostics` gathers what to print when something fails: the run's task
instances, the tail of every process log and of the task logs of unfinished tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support import REPO_ROOT
from tests.support.apiserver import ApiServer
from tests.support.connections import free_port
from tests.support.faults import wait_until

__all__ = ["CeleryCluster", "ManagedProcess", "MotoS3", "RedisNotFound", "RedisServer"]

_BIN = Path(sys.executable).parent
_REDIS_HINT = (
    "redis-server was not found: the scale-out test starts a Redis broker. Install it with "
    "`apt-get install redis-server` (.ci/run does), or skip the test with -m 'not scaleout'."
)


class RedisNotFound(RuntimeError):
    """Debian's ``redis-server`` is not installed."""


class ManagedProcess:
    """A long-running subprocess in its own process group, its output appended to ``log_path``.

    :param name: what error messages call it.
    :param argv: the command.
    :param env: its whole environment.
    :param log_path: where stdout and stderr go.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {' '.join(self.argv)} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.log_path.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; whatever is left of the group is killed."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # children (task processes, pool workers) included
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
            pass

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def log_contains(self, text: str) -> bool:
        try:
            return text in self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")


class _Service:
    """A :class:`ManagedProcess` with a port, started with ``with``; subclasses define the command and readiness."""

    name = "service"
    startup_timeout_s = 30.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: ManagedProcess | None = None

    def argv(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def ready(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self, attempts: int = 3) -> _Service:
        for _ in range(attempts):  # the free port may be taken between free_port() and bind()
            self.port = free_port()
            self.proc = ManagedProcess(
                self.name, self.argv(), env=os.environ, log_path=self.workdir / f"{self.name}.log"
            ).start()
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline and self.proc.running:
                if self.ready():
                    return self
                time.sleep(0.1)
            self.proc.stop(timeout=5)
        raise RuntimeError(f"{self.name} did not start:\n{self.proc.log_tail() if self.proc else ''}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(_Service):
    """``redis-server`` on ``127.0.0.1:<free port>``: no snapshots, no append-only file; ``url`` for Celery."""

    name = "redis"

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if binary is None:
            raise RedisNotFound(_REDIS_HINT)
        return [
            binary,
            *("--bind", "127.0.0.1", "--port", str(self.port), "--protected-mode", "yes"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"),
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class MotoS3(_Service):
    """moto's S3 in server mode on ``127.0.0.1:<free port>``."""

    name = "moto-s3"
    access_key = "clickstream-test"
    secret_key = "clickstream-test-secret"
    region = "us-east-1"

    def argv(self) -> list[str]:
        return [str(_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint}/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, bucket: str, *, versioned: bool = False) -> None:
        """Create ``bucket``; ``versioned`` keeps every version of every object (and delete markers)."""
        s3 = self.client()
        s3.create_bucket(Bucket=bucket)
        if versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def airflow_connection(self) -> str:
        """This server as an Airflow ``aws`` connection (JSON form, for ``AIRFLOW_CONN_<ID>``)."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint, "region_name": self.region},
            }
        )

    def storage_options(self) -> dict[str, Any]:
        """What pandas (through s3fs) needs to read ``s3://bucket/key`` from this server."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": self.region},
        }


class CeleryCluster:
    """Airflow with the CeleryExecutor: API server, scheduler, DAG processor and Celery workers on loopback.

    :param workdir: a fresh folder: ``AIRFLOW_HOME`` (task logs under ``airflow-home/logs``), one log per process.
    :param meta_url: SQLAlchemy URL of an empty PostgreSQL database for Airflow's metadata (migrated here); the
        Celery result backend uses it too.
    :param store_url: the session store (the ``clickstream_default`` connection).
    :param broker_url: the Celery broker (``redis://...``).
    :param workers: the workers' names: each is its Celery node name and its task instances' hostname.
    :param concurrency: task slots per worker. With 1 (and Airflow's late acknowledgement and prefetch of 1), a
        worker holds one task at a time, so tasks queued together spread over every worker that answers.
    :param extra_env: more environment for every process (connections, ``AIRFLOW__...`` options).
    :param startup_timeout_s: how long :meth:`start` waits for every process to be ready.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        meta_url: str,
        store_url: str,
        broker_url: str,
        workers: Sequence[str] = ("worker-a", "worker-b"),
        concurrency: int = 2,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 240,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.worker_names = list(workers)
        self.broker_url = broker_url
        self.startup_timeout_s = startup_timeout_s
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # `tests` importable by every process (the workers' hostname callable lives there)
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            **(extra_env or {}),
        }
        self.api = ApiServer(store_url, self.workdir / "api-server", extra_env=env)
        # The workers call the Execution API of this API server (in production: its service name).
        self.api.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.api.base_url}/execution/"
        self.env = dict(self.api.env)
        self.processes: dict[str, ManagedProcess] = {}
        airflow = str(_BIN / "airflow")
        for name, argv in (("scheduler", [airflow, "scheduler"]), ("dag-processor", [airflow, "dag-processor"])):
            self.processes[name] = ManagedProcess(name, argv, env=self.env, log_path=self.workdir / f"{name}.log")
        for name in self.worker_names:
            worker_env = {
                **self.env,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.support.worker_hostname.hostname",
                "CLICKSTREAM_WORKER_HOSTNAME": name,
            }
            argv = [airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
            argv += ["--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
            self.processes[name] = ManagedProcess(name, argv, env=worker_env, log_path=self.workdir / f"{name}.log")
        self._token: str | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    def start(self) -> CeleryCluster:
        """Migrate the metadata database, start every process, wait until the API server answers and every
        worker is connected to the broker; on failure stop everything and raise with the logs."""
        try:
            migrate = subprocess.run(
                [str(_BIN / "airflow"), "db", "migrate"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            if migrate.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
            for proc in self.processes.values():
                proc.start()
            self.api.start()  # waits for /api/v2/version
            deadline = time.monotonic() + self.startup_timeout_s
            for name in self.worker_names:
                worker = self.processes[name]

                def ready(worker: ManagedProcess = worker, name: str = name) -> bool:
                    worker.check_alive()
                    return worker.log_contains(f"{name}@") and worker.log_contains(" ready.")

                if not wait_until(ready, max(1.0, deadline - time.monotonic()), interval=0.5):
                    worker.check_alive()
                    raise RuntimeError(f"{name} not ready after {self.startup_timeout_s} s:\n{worker.log_tail()}")
            self.wait_for_workers(max(10.0, deadline - time.monotonic()))
            for proc in self.processes.values():
                proc.check_alive()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the workers first (no task is picked up any more), then the scheduler, DAG processor, API server."""
        for name in [*self.worker_names, "scheduler", "dag-processor"]:
            self.processes[name].stop(timeout=20)
        self.api.stop()

    def __enter__(self) -> CeleryCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ Celery

    def workers_answering(self, timeout: float = 2.0) -> set[str]:
        """The workers (by name) that answer a Celery ``ping`` through the broker within ``timeout`` s: they
        consume from the broker now (``celery inspect ping``, in process)."""
        from celery import Celery

        app = Celery("clickstream-scaleout-probe", broker=self.broker_url)
        try:
            replies = app.control.ping(timeout=timeout)
        finally:
            app.close()
        nodes = {node for reply in replies for node in reply}
        return {name for name in self.worker_names if any(node.startswith(f"{name}@") for node in nodes)}

    def wait_for_workers(self, timeout: float = 60) -> None:
        """Wait until every worker answers a ping (see :meth:`workers_answering`); raise with the logs of those
        that do not."""
        answering: set[str] = set()

        def all_answer() -> bool:
            nonlocal answering
            for name in self.worker_names:
                self.processes[name].check_alive()
            answering = self.workers_answering()
            return answering == set(self.worker_names)

        if not wait_until(all_answer, timeout, interval=0.5):
            for name in self.worker_names:
                self.processes[name].check_alive()  # a dead worker: say so, with its log
            silent = [name for name in self.worker_names if name not in answering]
            tails = "\n".join(f"----- {name} -----\n{self.processes[name].log_tail()}" for name in silent)
            raise RuntimeError(f"workers {silent} do not answer a Celery ping after {timeout:.0f} s:\n{tails}")

    # ------------------------------------------------------------------------------------------ REST

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call of Airflow's REST API as the admin; raises on an error status, with the answer's body."""
        if self._token is None:
            self._token = self.api.token("admin")
        answer = httpx.request(
            method,
            f"{self.api.base_url}{path}",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=30,
            **kwargs,
        )
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the DAG processor has parsed ``dag_id`` (the REST API knows it)."""

        def known() -> bool:
            for name in ("dag-processor", "scheduler"):
                self.processes[name].check_alive()
            return self.request("GET", f"/api/v2/dags/{dag_id}").status_code == 200

        if not wait_until(known, timeout, interval=1):
            raise RuntimeError(
                f"DAG {dag_id} not parsed after {timeout} s:\n{self.processes['dag-processor'].log_tail()}"
            )

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        """Trigger a run of ``dag_id`` with ``conf`` (its params); returns the run id."""
        answer = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)})
        return answer.json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait until the run is finished (``success`` or ``failed``; returned) or ``timeout`` s pass (its state
        then). A process of the cluster dying ends the wait with an error."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for proc in self.processes.values():
                proc.check_alive()
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        return state

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances (mapped ones one by one), as the REST API gives them."""
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return answer.json()["task_instances"]

    def clear_task(self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> None:
        """Clear one task instance of a run (nothing up- or downstream), so the scheduler runs it again."""
        task: str | list[Any] = task_id if map_index is None else [task_id, map_index]
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [task],
            "only_failed": False,
            "include_upstream": False,
            "include_downstream": False,
            "reset_dag_runs": True,
        }
        self.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)

    # ------------------------------------------------------------------------------------------ diagnostics

    def diagnostics(self, dag_id: str | None = None, run_id: str | None = None, chars: int = 3000) -> str:
        """What to print when something failed: the run's task instances, the tail of each process's log and
        of the task logs of task instances that did not succeed."""
        out: list[str] = []
        unfinished: list[dict[str, Any]] = []
        if dag_id and run_id:
            try:
                tis = self.task_instances(dag_id, run_id)
                for ti in tis:
                    out.append(
                        f"  {ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']} "
                        f"on {ti.get('hostname') or '-'}"
                    )
                    if ti["state"] != "success":
                        unfinished.append(ti)
            except Exception as err:
                out.append(f"  (task instances unavailable: {err})")
        for proc in [*self.processes.values()]:
            out.append(f"----- {proc.name} ({proc.log_path}) -----\n{proc.log_tail(chars)}")
        out.append(f"----- api-server ({self.api.log_path}) -----\n{self.api.log_tail(chars)}")
        logs = self.home / "logs"
        for ti in unfinished:
            pattern = f"dag_id={dag_id}/run_id={run_id}/task_id={ti['task_id']}/**/*.log"
            for path in sorted(logs.glob(pattern)):
                out.append(
                    f"----- task log {path.relative_to(logs)} -----\n{path.read_text(errors='replace')[-chars:]}"
                )
        return "\n".join(out)
