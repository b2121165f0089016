"""Test support shared by the tests and the benchmarks (``bench/``): a throwaway PostgreSQL cluster
(:mod:`~tests.support.pgcluster`), a real ``airflow api-server`` process (:mod:`~tests.support.apiserver`),
store URLs as Airflow connections (:mod:`~tests.support.connections`) and request bodies
(:mod:`~tests.support.bodies`). Import it as ``tests.support`` from the repository root (pytest puts the
root on ``sys.path`` for the ``tests`` package; the benchmarks run as ``python -m bench.run`` from there).
"""

from __future__ import annotations

from pathlib import Path

#: The repository's root folder.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The schema versions of include/sql/migrations, in order: what migrating an empty store applies.
MIGRATIONS = sorted(
    {int(path.name.split("_", 1)[0]) for path in (REPO_ROOT / "include" / "sql" / "migrations").glob("*.sql")}
)
