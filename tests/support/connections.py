"""A store URL as the Airflow Connection ``clickstream_default`` (URI and JSON forms); free ports."""

from __future__ import annotations

import json

from sqlalchemy.engine import make_url

from tests.support.pgcluster import free_port

__all__ = ["airflow_conn_json", "airflow_conn_uri", "free_port"]


def airflow_conn_uri(store_url: str) -> str:
    """The Airflow Connection URI of a store URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return store_url.replace("postgresql+psycopg://", "postgresql://", 1)


def airflow_conn_json(store_url: str) -> str:
    """The Airflow Connection of a store URL in Airflow's JSON form (``conn_type`` postgres or sqlite)."""
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": url.database})
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "password": url.password,
            "schema": url.database,
        }
    )
