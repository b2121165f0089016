"""The clickstream REST API: a FastAPI app that Airflow's API server mounts at ``/clickstream``.

Importing this package pulls in FastAPI and Airflow's API-server security helpers, so only the API
server (through :mod:`clickstream.plugin`) and tests import it. :func:`create_app` builds the app; the
engine of the session store is created in the app's lifespan, once per API-server process.
"""

from __future__ import annotations

from clickstream.api.app import create_app

__all__ = ["create_app"]
