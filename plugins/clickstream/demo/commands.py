"""The subcommands of ``python -m clickstream.demo`` (``run``, ``env``, ``urls``, ``prepare``, ``ready``) and
their arguments. The ``dev`` script calls them: ``./dev demo`` runs ``run``, ``./dev standalone`` the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from clickstream.demo.airflow_steps import (
    latest_released_batch,
    load_dag,
    migrate_airflow_db,
    migrate_store,
    run_outcome,
)
from clickstream.demo.console import Console
from clickstream.demo.environment import (
    ADMIN_USER,
    DAG_ID,
    admin_password,
    apply_environment,
    demo_environment,
    make_home,
    reset_home,
    resolve_dags,
    resolve_home,
    write_admin_password,
)
from clickstream.demo.summary import print_standalone_banner, print_summary
from clickstream.demo.urls import UrlConflict, check_port_free, shell_lines, standalone_urls

#: The command line's description (``--help``).
DESCRIPTION = "The newcomer's demo: the main job, end to end, on SQLite in a project-local folder."


def cmd_run(args: argparse.Namespace) -> int:
    """Seed a synthetic clickstream, run ``clickstream_release`` on it, print the outcome.

    :param args: the parsed command line (``--home``, ``--dags-folder``, ``--sessions``, ``--seed``,
        ``--shards``, ``--reset``).
    :return: the exit status.
    """
    home, dags = resolve_home(args.home), resolve_dags(args.dags_folder)
    if args.reset:
        reset_home(home, sys.stdout)
    make_home(home)
    apply_environment(home, dags)
    log_path = home / "logs" / "demo.log"
    seed = args.seed if args.seed is not None else int(time.time())
    started = time.monotonic()

    with Console(log_path) as con:
        con.say(f"clickstream demo: AIRFLOW_HOME={home}")
        con.say(f"  Airflow's output goes to {log_path}")
        con.step("Airflow metadata DB (SQLite): migrate", migrate_airflow_db)
        con.step("session store (SQLite): migrate", migrate_store, lambda v: f"applied {v}" if v else "up to date")

        from clickstream.hooks import ClickstreamHook
        from clickstream.synthetic import push_late_events, seed_store

        hook = ClickstreamHook()
        counts = con.step(
            f"seed {args.sessions:,} synthetic sessions (seed {seed})",
            lambda: seed_store(hook, args.sessions, seed=seed, id_prefix=f"demo{seed}", hold_late=True),
            lambda c: f"{c.sessions:,} sessions, {c.events:,} events, {c.duplicates} duplicate pushes ignored",
        )
        batch_id = counts.batch_ids[-1]

        dag = con.step(f"load DAG {DAG_ID} from {dags}", load_dag)
        for task in dag.tasks:  # fail fast: in the demo a retry would only wait out retry_delay (1 min)
            task.retries = 0
        dagrun = con.step(
            f"run DAG {DAG_ID} (dag.test: release -> {args.shards} extract shards -> manifest -> marks -> metrics)",
            lambda: dag.test(run_conf={"shards": args.shards}),
            lambda dr: f"run {dr.run_id}: {dr.state}",
        )
        states, outputs = run_outcome(DAG_ID, dagrun.run_id)
        state = str(getattr(dagrun.state, "value", dagrun.state))
        if state != "success":
            hook.close()
            failed = ", ".join(f"{t} {'/'.join(sorted(set(s)))}" for t, s in states.items())
            con.say(f"\ndemo: the DAG run {dagrun.run_id} ended {state!r} (tasks: {failed}).")
            con.say(f"  The tasks' logs are in {log_path}.")
            con.say("  A store made by an older version of the package may need a fresh start: ./dev demo --reset")
            return 1
        late = con.step(
            "late events arrive after the release", lambda: push_late_events(hook, counts), lambda n: f"{n} stored"
        )
        batch = hook.get_batch(batch_id)
        metrics = hook.batch_metrics(batch_id)
        marks = (outputs.get("mark_for_improvement") or {}).get("counts")
        hook.close()

    elapsed = time.monotonic() - started
    if batch.status != "released":
        print(
            f"\ndemo: the DAG run {dagrun.run_id} succeeded but batch {batch_id} is {batch.status}; see {log_path}",
            file=sys.stderr,
        )
        return 1
    print_summary(
        home=home,
        log_path=log_path,
        batch=batch,
        metrics=metrics,
        states=states,
        counts=counts,
        late=late,
        marks=marks,
        run_id=dagrun.run_id,
        elapsed=elapsed,
    )
    if not (metrics.sessions and metrics.events and metrics.clicks):
        print("demo: the released batch has no sessions, events or clicks; something is wrong", file=sys.stderr)
        return 1
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the demo environment as shell ``export`` lines (``eval "$(python -m clickstream.demo env)"``).

    :param args: the parsed command line (``--home``, ``--dags-folder``).
    :return: the exit status.
    """
    home, dags = resolve_home(args.home), resolve_dags(args.dags_folder)
    for key, value in demo_environment(home, dags).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_urls(args: argparse.Namespace) -> int:
    """Check the addresses of ``./dev standalone`` and print them as shell lines (see
    :func:`clickstream.demo.urls.shell_lines`); refuse, with what to set, a combination it cannot serve.

    ``AIRFLOW__API__HOST`` and ``AIRFLOW__API__PORT`` come from the environment (defaults 127.0.0.1 and
    8080, or the port of ``[api] base_url``); ``[api] base_url``, ``[api] ssl_cert`` and
    ``[core] execution_api_server_url`` from Airflow's configuration (environment or ``airflow.cfg``).

    :param args: the parsed command line (``--home``, ``--dags-folder``, ``--no-port-check``).
    :return: the exit status (2: refused).
    """
    home, dags = resolve_home(args.home), resolve_dags(args.dags_folder)
    make_home(home)
    apply_environment(home, dags)
    from airflow.configuration import conf

    try:
        urls = standalone_urls(
            host=os.environ.get("AIRFLOW__API__HOST"),
            port=os.environ.get("AIRFLOW__API__PORT"),
            base_url=conf.get("api", "base_url", fallback=None),
            execution_api_url=conf.get("core", "execution_api_server_url", fallback=None),
            ssl=bool(conf.get("api", "ssl_cert", fallback=None)),
        )
        if args.port_check:
            check_port_free(urls.host, urls.port)
    except UrlConflict as exc:
        print(f"standalone: {exc}", file=sys.stderr)
        return 2
    print("\n".join(shell_lines(urls)), flush=True)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Migrate Airflow's metadata DB and the store, and give the local admin a known password.

    :param args: the parsed command line (``--home``, ``--dags-folder``).
    :return: the exit status.
    """
    home, dags = resolve_home(args.home), resolve_dags(args.dags_folder)
    make_home(home)
    apply_environment(home, dags)
    with Console(home / "logs" / "demo.log") as con:
        con.step("Airflow metadata DB (SQLite): migrate", migrate_airflow_db)
        con.step("session store (SQLite): migrate", migrate_store, lambda v: f"applied {v}" if v else "up to date")
        pw_file = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
        con.step(
            "local admin password", lambda: write_admin_password(home), lambda _pw: f"user {ADMIN_USER}, file {pw_file}"
        )
    return 0


def cmd_ready(args: argparse.Namespace) -> int:
    """Wait until the API server answers, then print the URLs and a copy-paste curl example.

    :param args: the parsed command line (``--home``, ``--dags-folder``, ``--url``, ``--probe-url``,
        ``--timeout``, ``--log``, ``--watch-pid``).
    :return: the exit status.
    """
    import urllib.error
    import urllib.request

    home = resolve_home(args.home)
    base = args.url.rstrip("/")
    probe = (args.probe_url or args.url).rstrip("/")
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with urllib.request.urlopen(f"{probe}/api/v2/version", timeout=3) as resp:
                version = json.loads(resp.read()).get("version")
                break
        except (urllib.error.URLError, OSError, ValueError):
            if args.watch_pid and not _alive(args.watch_pid):
                print(f"standalone: Airflow exited before it was ready; see {args.log}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(
                    f"standalone: the API server did not answer at {probe} within {args.timeout:.0f} s; see {args.log}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(1)
    os.environ.update(demo_environment(home, resolve_dags(args.dags_folder)))
    password = admin_password(home)
    batch = latest_released_batch() or "<batch_id: run ./dev demo first>"
    print_standalone_banner(version=version, home=home, base=base, log=args.log, password=password, batch=batch)
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
    """Entry point of ``python -m clickstream.demo``.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :return: the exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m clickstream.demo", description=DESCRIPTION)
    parser.add_argument("--home", default=".local/demo", help="demo folder = AIRFLOW_HOME (default .local/demo)")
    parser.add_argument(
        "--dags-folder", default=None, help="folder with clickstream_release.py (default: the checkout's dags/)"
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="seed, run the clickstream_release DAG, print the outcome (default)")
    _run_options(run)
    sub.add_parser("env", help="print the demo environment as shell export lines")
    urls = sub.add_parser("urls", help="check standalone's host, port and URLs; print them as shell lines")
    urls.add_argument(
        "--no-port-check", dest="port_check", action="store_false", help="do not refuse a port already in use"
    )
    sub.add_parser("prepare", help="migrate Airflow's DB and the store, set the local admin's password")
    ready = sub.add_parser("ready", help="wait for the API server, then print URLs and a curl example")
    ready.add_argument("--url", default="http://127.0.0.1:8080", help="API server base URL (shown)")
    ready.add_argument("--probe-url", default=None, help="base URL to poll on this machine (default: --url)")
    ready.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (default 180)")
    ready.add_argument("--log", default="(the standalone log)", help="log file to point at")
    ready.add_argument(
        "--watch-pid", type=int, default=None, help="give up when this process (the API server's parent) exits"
    )
    _run_options(parser)  # `python -m clickstream.demo --sessions 500` means `run --sessions 500`
    args = parser.parse_args(argv)
    commands = {
        "run": cmd_run,
        "env": cmd_env,
        "urls": cmd_urls,
        "prepare": cmd_prepare,
        "ready": cmd_ready,
        None: cmd_run,
    }
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
