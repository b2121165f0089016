"""clickstream: manage a search system's clickstream in Airflow 3 (sessions, results shown, clicks).

The package is layered: :mod:`clickstream.models` (shapes), :mod:`clickstream.store` (every operation,
no Airflow), then thin adapters (:mod:`clickstream.hooks`, :mod:`clickstream.operators`,
:mod:`clickstream.web`, :mod:`clickstream.plugin`). Importing this package is cheap and has no side effects.
"""

from __future__ import annotations

__version__ = "0.1.0"
