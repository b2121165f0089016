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
shell ``export`` lines, ``urls`` checks the API server's host, port and URLs and prints them (the Execution
API's URL follows the port; what cannot be served is refused), ``prepare`` migrates and writes the local
admin's password, ``ready`` waits for the API server and prints the URLs and a curl example.

Modules, one concern each:

* :mod:`~clickstream.demo.environment`: the demo folder, the environment variables (Airflow's settings,
  the session store's Connection), the local admin's password;
* :mod:`~clickstream.demo.urls`: the addresses of ``./dev standalone``, kept consistent with
  ``AIRFLOW__API__HOST`` / ``AIRFLOW__API__PORT`` (no Airflow import);
* :mod:`~clickstream.demo.console`: the terminal (steps and timings) while everything else goes to the log;
* :mod:`~clickstream.demo.airflow_steps`: migrations, loading the DAG, reading a DAG run's outcome;
* :mod:`~clickstream.demo.summary`: the summary at the end (which ``.ci/run`` reads) and the standalone
  banner;
* :mod:`~clickstream.demo.commands`: the subcommands and the command line; ``__main__`` calls
  :func:`~clickstream.demo.commands.main`.

Nothing here is needed in production; it only composes the package's public parts. No module of this
package imports Airflow at import time: the environment must be set first.
"""

from __future__ import annotations

from clickstream.demo.commands import cmd_env, cmd_prepare, cmd_ready, cmd_run, cmd_urls, main
from clickstream.demo.environment import ADMIN_PASSWORD, ADMIN_USER, DAG_ID, demo_environment

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "DAG_ID",
    "cmd_env",
    "cmd_prepare",
    "cmd_ready",
    "cmd_run",
    "cmd_urls",
    "demo_environment",
    "main",
]
