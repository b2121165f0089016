"""The clickstream web app: the FastAPI app Airflow's API server mounts at ``/clickstream``.

One app serves two faces of the same store, side by side in :mod:`clickstream.web.routes`: the JSON REST
API (``sessions``, ``batches``, ``bulk``, ``admin``) and the Clickstream page shown in the Airflow UI
(``page``, HTML under ``/clickstream/ui/``; its rendering, templates and stylesheet are in
:mod:`clickstream.web.page`). Both get the store from :mod:`clickstream.web.holder` and their errors from
:mod:`clickstream.web.errors`.

* :mod:`clickstream.web.app`: :func:`~clickstream.web.app.create_app` and the lifespan (store opened once
  per process);
* :mod:`clickstream.web.holder`: the per-process store and the routes' dependency on it;
* :mod:`clickstream.web.deps`: who may call a route (Airflow's auth manager);
* :mod:`clickstream.web.errors`: what status and message every error answers (JSON or HTML);
* :mod:`clickstream.web.limits`: the request-size middleware;
* :mod:`clickstream.web.gc_tuning`: the garbage-collector tuning of an API-server worker.

Importing this package is cheap: only the API server (through :mod:`clickstream.plugin`, which imports
:mod:`clickstream.web.app` when Airflow reads ``fastapi_apps``) and tests import its modules, which pull in
FastAPI and Airflow's API-server security helpers.
"""
