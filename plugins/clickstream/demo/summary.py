"""What the demo prints when it is done: the released batch, its dataset and metrics, and how to go on;
and the banner of ``./dev standalone`` once the API server answers.

The CI script ``.ci/run`` reads the summary: the line ``Released batch <id>`` and the numbers after the
labels ``sessions``, ``events``, ``click-through rate`` and ``MRR of first click``. Keep those as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clickstream.demo.environment import ADMIN_USER, DAG_ID


def _fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _local(path: Any) -> str:
    text = str(path)
    return text.removeprefix("file://")


def print_summary(
    *,
    home: Path,
    log_path: Path,
    batch: Any,
    metrics: Any,
    states: dict[str, list[str]],
    counts: Any,
    late: int,
    marks: dict[str, int] | None,
    run_id: str,
    elapsed: float,
) -> None:
    """Print what the demo run did, on stdout.

    :param home: the demo folder.
    :param log_path: Airflow's log file.
    :param batch: the released batch (the hook's ``get_batch``).
    :param metrics: its metrics (the hook's ``batch_metrics``).
    :param states: the tasks' states, as :func:`clickstream.demo.airflow_steps.run_outcome` returns them.
    :param counts: what the synthetic generator seeded (:func:`clickstream.synthetic.seed_store`).
    :param late: how many late events arrived after the release.
    :param marks: the counts of the ``mark_for_improvement`` task, if it returned them.
    :param run_id: the DAG run.
    :param elapsed: seconds the demo took.
    """
    from clickstream.dataset import read_manifest
    from clickstream.operators.extract import dataset_root

    root = dataset_root(None, batch.batch_id)
    try:
        manifest = read_manifest(root)
    except FileNotFoundError:
        manifest = None
    tasks = ", ".join(
        f"{t}" + (f"[{len(s)}]" if len(s) > 1 else "") + f" {'/'.join(sorted(set(s)))}" for t, s in states.items()
    )
    p = print
    p("")
    p(f"Released batch {batch.batch_id}")
    p(f"  release_id           {batch.release_id}")
    p(f"  DAG run              {DAG_ID} / {run_id}: success")
    p(f"  tasks                {tasks}")
    p(
        f"  sessions             {metrics.sessions}  "
        f"({counts.payload_search_sessions} payload-search, {counts.irrelevant_sessions} marked irrelevant)"
    )
    p(f"  events               {metrics.events}  ({metrics.clicks} clicks; {late} arrived late, after the release)")
    if manifest is not None:
        p(f"  dataset              {manifest['path']}")
        p(
            f"                       {manifest['sessions']} session rows, {manifest['events']} event rows, "
            f"{len(manifest['parts'])} part(s) from {len(manifest['shards'])} shard(s)"
        )
    else:
        p(f"  dataset              {root} (no manifest found)")
    if marks is not None:
        p(
            f"  improvement marks    {marks.get('marked', 0)} sessions queued for model improvement; skipped: "
            f"{marks.get('skipped_payload_search', 0)} payload-search, {marks.get('skipped_no_events', 0)} without "
            "a click on a shown result"
        )
    p("Metrics")
    p(
        f"  click-through rate   {_fmt_rate(metrics.click_through_rate)}  "
        f"({metrics.sessions_with_click} of {metrics.sessions} sessions have a click)"
    )
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


def print_standalone_banner(*, version: str | None, home: Path, base: str, log: str, password: str, batch: str) -> None:
    """Print, once the API server answers, the URLs of ``./dev standalone`` and a copy-paste curl example.

    :param version: Airflow's version, as the API server reports it.
    :param home: the demo folder.
    :param base: the API server's base URL, without a trailing slash.
    :param log: the log file to point at.
    :param password: the local admin's password.
    :param batch: a batch id for the curl example (or a hint to run the demo first).
    """
    print(
        f"""
Airflow {version} is running (standalone, LocalExecutor, SQLite in {home}).
  UI                 {base}/            user {ADMIN_USER}, password {password}
  clickstream API    {base}/clickstream/docs   (OpenAPI: {base}/clickstream/openapi.json)
  Airflow REST API   {base}/docs
  logs               {log}

Try the REST API (copy-paste):
  TOKEN=$(curl -s -X POST {base}/auth/token -H 'Content-Type: application/json' \\
            -d '{{"username": "{ADMIN_USER}", "password": "{password}"}}' \\
          | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer $TOKEN" \\
       '{base}/clickstream/batch/sessions?batch_id={batch}&limit=2&events_limit=3' | python3 -m json.tool

Trigger the DAG from the UI (DAGs -> {DAG_ID} -> Trigger) or run ./dev demo in another terminal.
Stop with Ctrl-C.
""",
        flush=True,
    )
