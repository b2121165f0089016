"""The newcomer's demo: the main job, end to end, on SQLite in a project-local folder.

``./dev demo`` runs ``python -m clickstream.demo run``, which

1. uses ``--home`` (default ``.local/demo``) as ``AIRFLOW_HOME``, with SQLite for both Airflow's metadata
   (``airflow.db``) and the session store (``clickstream.db``, the Connection ``clickstream_default`` set
   by ``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``), and the repository's ``dags/`` as the DAGs folder;
2. migrates Airflow's metadata database (what ``airflow db migrate`` does) and the session store;
3. seeds a synthetic clickstream (:mod:`clickstream.synthetic`) into the collecting batch;
4. runs the ``clickstream_release`` DAG in-process with ``dag.test()``: release, sharded Parquet extraction,
   manifest, improvement marks, metrics;
5. pushes the seeded sessions' late events (clicks that arrive after the release);
6. prints what happened and how to go on. Airflow's own output goes to ``<home>/logs/demo.log``.

Running it again seeds a *new* batch (new session ids) and releases it in a new DAG run, so the store keeps
its history, as a real one would; ``--reset`` deletes the demo folder first and starts from nothing.

``./dev standalone`` uses the same folder: ``python -m clickstream.demo env`` prints the environment as
shell ``export`` lines, ``prepare`` migrates and writes the local admin's password, ``ready`` waits for the
API server and prints the URLs and a curl example.

Nothing here is needed in production; it only composes the package's public parts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

DAG_ID = "clickstream_release"
#: The local admin of ``./dev standalone`` (SimpleAuthManager); local use only, the API binds to loopback.
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
#: Written into the demo folder; ``--reset`` only deletes a folder that carries it.
_MARKER = ".clickstream-demo"


# ---------------------------------------------------------------------------------------------- environment


def _checkout_dags_folder() -> Path | None:
    """``dags/`` of the checkout this module runs from (editable install), if there is one."""
    candidate = Path(__file__).resolve().parents[2] / "dags"
    return candidate if (candidate / f"{DAG_ID}.py").is_file() else None


def demo_environment(home: Path, dags_folder: Path) -> dict[str, str]:
    """The environment of the demo and of ``./dev standalone``: everything lives under ``home``.

    :param home: the demo folder (``AIRFLOW_HOME``), an absolute path.
    :param dags_folder: the folder holding ``clickstream_release.py``.
    """
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor starts one worker process per parallelism slot: a few are plenty on a laptop.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        # The session store: a Connection given by URI; sqlite:////abs/path.db (four slashes).
        "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": f"sqlite:///{home}/clickstream.db",
        # One admin with a known password for local use (see README, "Open it in the Airflow UI").
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
    }


def _check_path(home: Path) -> None:
    if any(c in str(home) for c in " %?#"):
        raise SystemExit(f"demo: the demo folder {home} contains a space, %, ? or #, which SQLite URIs do not "
                         "take; use --home with a plain path")


def _apply_environment(home: Path, dags_folder: Path) -> None:
    """Set the demo environment in this process; must run before the first ``import airflow``."""
    if "airflow" in sys.modules:  # pragma: no cover - a programming error, not a user error
        raise RuntimeError("clickstream.demo must configure Airflow before airflow is imported")
    os.environ.update(demo_environment(home, dags_folder))


# ---------------------------------------------------------------------------------------------- console


class _Console:
    """Progress for a person on the terminal, while everything else (Airflow's logs, task output) goes to
    a log file: file descriptors 1 and 2 are redirected, so output of child processes is captured too."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.out: TextIO = sys.stdout
        self._saved: tuple[int, int] | None = None

    def __enter__(self) -> _Console:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            os.close(self._saved[0])
            os.close(self._saved[1])
            self._saved = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, label: str, fn: Callable[[], T], detail: Callable[[T], str] | None = None) -> T:
        """Run ``fn`` as one numbered step: ``label ... done in 1.2 s (detail)``; log marks where it begins."""
        print(f"\n===== demo: {label} =====", flush=True)  # into the log, to find a step's output there
        self.out.write(f"  {label} ... ")
        self.out.flush()
        started = time.monotonic()
        try:
            result = fn()
        except BaseException:
            self.say("FAILED")
            raise
        extra = f" ({detail(result)})" if detail else ""
        self.say(f"done in {time.monotonic() - started:.1f} s{extra}")
        return result


# ---------------------------------------------------------------------------------------------- steps


def _migrate_airflow_db() -> None:
    from airflow.utils import db

    db.upgradedb()  # what `airflow db migrate` runs: creates a new DB from the ORM, or upgrades an old one


def _migrate_store() -> list[int]:
    from clickstream.hooks import ClickstreamHook

    with ClickstreamHook() as hook:
        return hook.migrate()


def _write_admin_password(home: Path) -> str:
    """Make sure the local admin has a known password in SimpleAuthManager's passwords file."""
    path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    passwords = {}
    if path.is_file() and path.read_text().strip():
        passwords = json.loads(path.read_text())
    if ADMIN_USER not in passwords:
        passwords[ADMIN_USER] = ADMIN_PASSWORD
        path.write_text(json.dumps(passwords) + "\n")
    return passwords[ADMIN_USER]


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = bag.get_dag(DAG_ID)
    if dag is None:
        errors = "\n".join(f"{path}: {err}" for path, err in bag.import_errors.items())
        raise SystemExit(f"demo: DAG {DAG_ID!r} not found in {os.environ['AIRFLOW__CORE__DAGS_FOLDER']}\n{errors}")
    return dag


def _run_outcome(dag_id: str, run_id: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """States of every task of one DAG run (``{task_id: [state per map index]}``) and the return values
    of its unmapped tasks (``{task_id: value}``), read from Airflow's metadata DB."""
    from sqlalchemy import select

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    states: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.start_date.is_(None), TaskInstance.start_date, TaskInstance.map_index)
        ).all()  # in the order they ran
        for task_id, _map_index, state in rows:
            states.setdefault(task_id, []).append(str(getattr(state, "value", state)))
        for xcom in session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value",
                                                       map_indexes=-1)):
            values[xcom.task_id] = XComModel.deserialize_value(xcom)
    return states, values


def _fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------------------------------------- commands


def _resolve_home(raw: str) -> Path:
    home = Path(raw).expanduser().resolve()
    _check_path(home)
    return home


def _resolve_dags(raw: str | None) -> Path:
    dags = Path(raw).expanduser().resolve() if raw else _checkout_dags_folder()
    if dags is None or not (dags / f"{DAG_ID}.py").is_file():
        raise SystemExit("demo: cannot find dags/clickstream_release.py; run from a checkout or pass --dags-folder")
    return dags


def _reset(home: Path, out: TextIO) -> None:
    if not home.exists():
        return
    if not (home / _MARKER).is_file():
        raise SystemExit(f"demo: --reset refuses to delete {home}: it was not made by the demo (no {_MARKER})")
    shutil.rmtree(home)
    print(f"demo: deleted {home}", file=out)


def cmd_run(args: argparse.Namespace) -> int:
    """Seed a synthetic clickstream, run ``clickstream_release`` on it, print the outcome."""
    home, dags = _resolve_home(args.home), _resolve_dags(args.dags_folder)
    if args.reset:
        _reset(home, sys.stdout)
    home.mkdir(parents=True, exist_ok=True)
    (home / _MARKER).touch()
    _apply_environment(home, dags)
    log_path = home / "logs" / "demo.log"
    seed = args.seed if args.seed is not None else int(time.time())
    started = time.monotonic()

    with _Console(log_path) as con:
        con.say(f"clickstream demo: AIRFLOW_HOME={home}")
        con.say(f"  Airflow's output goes to {log_path}")
        con.step("Airflow metadata DB (SQLite): migrate", _migrate_airflow_db)
        applied = con.step("session store (SQLite): migrate", _migrate_store,
                           lambda v: f"applied {v}" if v else "up to date")
        del applied

        from clickstream.hooks import ClickstreamHook
        from clickstream.synthetic import push_late_events, seed_store

        hook = ClickstreamHook()
        counts = con.step(
            f"seed {args.sessions:,} synthetic sessions (seed {seed})",
            lambda: seed_store(hook, args.sessions, seed=seed, id_prefix=f"demo{seed}", hold_late=True),
            lambda c: f"{c.sessions:,} sessions, {c.events:,} events, {c.duplicates} duplicate pushes ignored",
        )
        batch_id = counts.batch_ids[-1]

        dag = con.step(f"load DAG {DAG_ID} from {dags}", _load_dag)
        for task in dag.tasks:  # fail fast: in the demo a retry would only wait out retry_delay (1 min)
            task.retries = 0
        dagrun = con.step(
            f"run DAG {DAG_ID} (dag.test: release -> {args.shards} extract shards -> manifest -> marks -> metrics)",
            lambda: dag.test(run_conf={"shards": args.shards}),
            lambda dr: f"run {dr.run_id}: {dr.state}",
        )
        states, outputs = _run_outcome(DAG_ID, dagrun.run_id)
        state = str(getattr(dagrun.state, "value", dagrun.state))
        if state != "success":
            hook.close()
            failed = ", ".join(f"{t} {'/'.join(sorted(set(s)))}" for t, s in states.items())
            con.say(f"\ndemo: the DAG run {dagrun.run_id} ended {state!r} (tasks: {failed}).")
            con.say(f"  The tasks' logs are in {log_path}.")
            con.say("  A store made by an older version of the package may need a fresh start: ./dev demo --reset")
            return 1
        late = con.step("late events arrive after the release", lambda: push_late_events(hook, counts),
                        lambda n: f"{n} stored")
        batch = hook.get_batch(batch_id)
        metrics = hook.batch_metrics(batch_id)
        marks = (outputs.get("mark_for_improvement") or {}).get("counts")
        hook.close()

    elapsed = time.monotonic() - started
    if batch.status != "released":
        print(f"\ndemo: the DAG run {dagrun.run_id} succeeded but batch {batch_id} is {batch.status}; "
              f"see {log_path}", file=sys.stderr)
        return 1
    _print_summary(home=home, log_path=log_path, batch=batch, metrics=metrics, states=states, counts=counts,
                   late=late, marks=marks, run_id=dagrun.run_id, elapsed=elapsed)
    if not (metrics.sessions and metrics.events and metrics.clicks):
        print("demo: the released batch has no sessions, events or clicks; something is wrong", file=sys.stderr)
        return 1
    return 0


def _print_summary(*, home: Path, log_path: Path, batch: Any, metrics: Any, states: dict[str, list[str]],
                   counts: Any, late: int, marks: dict[str, int] | None, run_id: str, elapsed: float) -> None:
    from clickstream.dataset import read_manifest
    from clickstream.operators.extract import dataset_root

    root = dataset_root(None, batch.batch_id)
    try:
        manifest = read_manifest(root)
    except FileNotFoundError:
        manifest = None
    tasks = ", ".join(f"{t}" + (f"[{len(s)}]" if len(s) > 1 else "") + f" {'/'.join(sorted(set(s)))}"
                      for t, s in states.items())
    p = print
    p("")
    p(f"Released batch {batch.batch_id}")
    p(f"  release_id           {batch.release_id}")
    p(f"  DAG run              {DAG_ID} / {run_id}: success")
    p(f"  tasks                {tasks}")
    p(f"  sessions             {metrics.sessions}  "
      f"({counts.payload_search_sessions} payload-search, {counts.irrelevant_sessions} marked irrelevant)")
    p(f"  events               {metrics.events}  ({metrics.clicks} clicks; {late} arrived late, after the release)")
    if manifest is not None:
        p(f"  dataset              {manifest['path']}")
        p(f"                       {manifest['sessions']} session rows, {manifest['events']} event rows, "
          f"{len(manifest['parts'])} part(s) from {len(manifest['shards'])} shard(s)")
    else:
        p(f"  dataset              {root} (no manifest found)")
    if marks is not None:
        p(f"  improvement marks    {marks.get('marked', 0)} sessions queued for model improvement; skipped: "
          f"{marks.get('skipped_payload_search', 0)} payload-search, {marks.get('skipped_no_events', 0)} without "
          "a click on a shown result")
    p("Metrics")
    p(f"  click-through rate   {_fmt_rate(metrics.click_through_rate)}  "
      f"({metrics.sessions_with_click} of {metrics.sessions} sessions have a click)")
    p(f"  MRR of first click   {_fmt_rate(metrics.mean_reciprocal_rank)}")
    p(f"  no-click rate        {_fmt_rate(metrics.no_click_rate)}")
    p(f"  irrelevant rate      {_fmt_rate(metrics.irrelevant_rate)}")
    p(f"  late events          {metrics.late_events}")
    p(f"  (as the DAG saw them at release time: {root / 'metrics.json'})")
    p("")
    p(f"Done in {elapsed:.0f} s. Airflow's log: {log_path}")
    p("Next:")
    p("  ./dev demo                 run again: seeds a new batch and releases it in a new DAG run")
    p("  ./dev demo --reset         start over from an empty demo folder")
    p("  ./dev standalone           the same setup in the Airflow UI (http://localhost:8080, admin/admin),")
    p("                             with the REST API at /clickstream and its docs at /clickstream/docs")
    p(f"  .venv/bin/python -c \"import pandas as pd; print(pd.read_parquet('{_local(root)}/sessions').head())\"")
    p("  ./dev test                 the test suite (starts its own PostgreSQL)")


def _local(path: Any) -> str:
    text = str(path)
    return text.removeprefix("file://")


def cmd_env(args: argparse.Namespace) -> int:
    """Print the demo environment as shell ``export`` lines (``eval "$(python -m clickstream.demo env)"``)."""
    home, dags = _resolve_home(args.home), _resolve_dags(args.dags_folder)
    for key, value in demo_environment(home, dags).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Migrate Airflow's metadata DB and the store, and give the local admin a known password."""
    home, dags = _resolve_home(args.home), _resolve_dags(args.dags_folder)
    home.mkdir(parents=True, exist_ok=True)
    (home / _MARKER).touch()
    _apply_environment(home, dags)
    with _Console(home / "logs" / "demo.log") as con:
        con.step("Airflow metadata DB (SQLite): migrate", _migrate_airflow_db)
        con.step("session store (SQLite): migrate", _migrate_store, lambda v: f"applied {v}" if v else "up to date")
        con.step("local admin password", lambda: _write_admin_password(home),
                 lambda _pw: f"user {ADMIN_USER}, file {os.environ['AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE']}")
    return 0


def _latest_released_batch() -> str | None:
    from clickstream.hooks import ClickstreamHook

    try:
        with ClickstreamHook() as hook:
            batches = hook.list_batches(status="released", limit=100)
    except Exception:  # noqa: BLE001 - no store yet: the banner simply has no example batch
        return None
    return max((b.batch_id for b in batches), default=None)


def cmd_ready(args: argparse.Namespace) -> int:
    """Wait until the API server answers, then print the URLs and a copy-paste curl example."""
    import urllib.error
    import urllib.request

    home = _resolve_home(args.home)
    base = args.url.rstrip("/")
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/v2/version", timeout=3) as resp:
                version = json.loads(resp.read()).get("version")
                break
        except (urllib.error.URLError, OSError, ValueError):
            if args.watch_pid and not _alive(args.watch_pid):
                print(f"standalone: Airflow exited before it was ready; see {args.log}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"standalone: the API server did not answer at {base} within {args.timeout:.0f} s; "
                      f"see {args.log}", file=sys.stderr)
                return 1
            time.sleep(1)
    os.environ.update(demo_environment(home, _resolve_dags(args.dags_folder)))
    password = ADMIN_PASSWORD
    pw_file = home / "simple_auth_manager_passwords.json"
    if pw_file.is_file():
        password = json.loads(pw_file.read_text()).get(ADMIN_USER, password)
    batch = _latest_released_batch() or "<batch_id: run ./dev demo first>"
    print(f"""
Airflow {version} is running (standalone, LocalExecutor, SQLite in {home}).
  UI                 {base}/            user {ADMIN_USER}, password {password}
  clickstream API    {base}/clickstream/docs   (OpenAPI: {base}/clickstream/openapi.json)
  Airflow REST API   {base}/docs
  logs               {args.log}

Try the REST API (copy-paste):
  TOKEN=$(curl -s -X POST {base}/auth/token -H 'Content-Type: application/json' \\
            -d '{{"username": "{ADMIN_USER}", "password": "{password}"}}' \\
          | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer $TOKEN" \\
       '{base}/clickstream/batch/sessions?batch_id={batch}&limit=2&events_limit=3' | python3 -m json.tool

Trigger the DAG from the UI (DAGs -> {DAG_ID} -> Trigger) or run ./dev demo in another terminal.
Stop with Ctrl-C.
""", flush=True)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m clickstream.demo``."""
    parser = argparse.ArgumentParser(prog="python -m clickstream.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=".local/demo", help="demo folder = AIRFLOW_HOME (default .local/demo)")
    parser.add_argument("--dags-folder", default=None, help="folder with clickstream_release.py "
                                                            "(default: the checkout's dags/)")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="seed, run the clickstream_release DAG, print the outcome (default)")
    _run_options(run)
    sub.add_parser("env", help="print the demo environment as shell export lines")
    sub.add_parser("prepare", help="migrate Airflow's DB and the store, set the local admin's password")
    ready = sub.add_parser("ready", help="wait for the API server, then print URLs and a curl example")
    ready.add_argument("--url", default="http://127.0.0.1:8080", help="API server base URL")
    ready.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (default 180)")
    ready.add_argument("--log", default="(the standalone log)", help="log file to point at")
    ready.add_argument("--watch-pid", type=int, default=None, help="give up when this process (the API "
                                                                    "server's parent) exits")
    _run_options(parser)  # `python -m clickstream.demo --sessions 500` means `run --sessions 500`
    args = parser.parse_args(argv)
    commands = {"run": cmd_run, "env": cmd_env, "prepare": cmd_prepare, "ready": cmd_ready, None: cmd_run}
    return commands[args.command](args)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=_positive_int, default=2000, help="sessions to seed (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default: the current time)")
    parser.add_argument("--shards", type=_positive_int, default=2, help="extraction shards (default 2)")
    parser.add_argument("--reset", action="store_true", help="delete the demo folder first")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
