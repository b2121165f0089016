"""The demo's environment: its folder (``AIRFLOW_HOME``), the environment variables that configure Airflow
and the session store's Connection, and the local admin's password.

``python -m clickstream.demo env`` prints :func:`demo_environment` as shell ``export`` lines for
``./dev standalone`` (see the ``dev`` script). Nothing here imports Airflow: the environment must be set
before the first ``import airflow``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

DAG_ID = "clickstream_release"
#: The local admin of ``./dev standalone`` (SimpleAuthManager); local use only, the API binds to loopback.
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
#: Written into the demo folder; ``--reset`` only deletes a folder that carries it.
_MARKER = ".clickstream-demo"


def _checkout_dags_folder() -> Path | None:
    """``dags/`` of the checkout this module runs from (editable install), if there is one."""
    candidate = Path(__file__).resolve().parents[3] / "dags"
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
        raise SystemExit(
            f"demo: the demo folder {home} contains a space, %, ? or #, which SQLite URIs do not "
            "take; use --home with a plain path"
        )


def resolve_home(raw: str) -> Path:
    """The demo folder given by ``--home``, as an absolute path; exits if SQLite URIs cannot take it.

    :param raw: the option's value.
    """
    home = Path(raw).expanduser().resolve()
    _check_path(home)
    return home


def resolve_dags(raw: str | None) -> Path:
    """The DAGs folder given by ``--dags-folder``, else the checkout's ``dags/``; exits if it has no
    ``clickstream_release.py``.

    :param raw: the option's value, or None.
    """
    dags = Path(raw).expanduser().resolve() if raw else _checkout_dags_folder()
    if dags is None or not (dags / f"{DAG_ID}.py").is_file():
        raise SystemExit("demo: cannot find dags/clickstream_release.py; run from a checkout or pass --dags-folder")
    return dags


def reset_home(home: Path, out: TextIO) -> None:
    """Delete the demo folder (``--reset``), but only one the demo made.

    :param home: the demo folder.
    :param out: where to say that it was deleted.
    """
    if not home.exists():
        return
    if not (home / _MARKER).is_file():
        raise SystemExit(f"demo: --reset refuses to delete {home}: it was not made by the demo (no {_MARKER})")
    shutil.rmtree(home)
    print(f"demo: deleted {home}", file=out)


def make_home(home: Path) -> None:
    """Create the demo folder, marked as the demo's (so that ``--reset`` may delete it later).

    :param home: the demo folder.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / _MARKER).touch()


def apply_environment(home: Path, dags_folder: Path) -> None:
    """Set the demo environment in this process; must run before the first ``import airflow``.

    :param home: the demo folder (``AIRFLOW_HOME``).
    :param dags_folder: the folder holding ``clickstream_release.py``.
    """
    if "airflow" in sys.modules:  # pragma: no cover - a programming error, not a user error
        raise RuntimeError("clickstream.demo must configure Airflow before airflow is imported")
    os.environ.update(demo_environment(home, dags_folder))


def write_admin_password(home: Path) -> str:
    """Make sure the local admin has a known password in SimpleAuthManager's passwords file.

    :param home: the demo folder (the file's path comes from the environment :func:`apply_environment` set).
    :return: the admin's password.
    """
    path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    passwords = {}
    if path.is_file() and path.read_text().strip():
        passwords = json.loads(path.read_text())
    if ADMIN_USER not in passwords:
        passwords[ADMIN_USER] = ADMIN_PASSWORD
        path.write_text(json.dumps(passwords) + "\n")
    return passwords[ADMIN_USER]


def admin_password(home: Path) -> str:
    """The local admin's password as the passwords file has it (the default one if there is no file yet).

    :param home: the demo folder.
    """
    password = ADMIN_PASSWORD
    pw_file = home / "simple_auth_manager_passwords.json"
    if pw_file.is_file():
        password = json.loads(pw_file.read_text()).get(ADMIN_USER, password)
    return password
