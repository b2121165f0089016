"""Provider metadata: the ``clickstream`` connection type and the ``[clickstream]`` config section.

Airflow reads :func:`get_provider_info` through the ``apache_airflow_provider`` entry point
(``pyproject.toml``). It registers:

* the connection type ``clickstream`` (:class:`clickstream.hooks.ClickstreamHook`), with its form in the UI
  declared here (``conn-fields``, ``ui-field-behaviour``), so the hook defines no form methods. A
  ``clickstream://user:password@host:5432/database`` Connection is the PostgreSQL store; ``postgres`` and
  ``sqlite`` Connections keep working without it;
* the ``[clickstream]`` config section: every key, its description and default, so ``airflow config list``
  shows them and ``conf.get("clickstream", key)`` answers the default when nothing is configured;
* the operators' extra links "Batch" and "Dataset" (``extra-links``, listed by ``airflow providers links``;
  the UI finds them through the serialized DAG, see :mod:`clickstream.operators.links`).

The plugin (REST API) stays on the ``airflow.plugins`` entry point: listing it here too would register it
twice. Importing this module is cheap: every Airflow process calls :func:`get_provider_info`.
"""

from __future__ import annotations

from typing import Any

from clickstream import __version__

#: The ``[clickstream]`` keys: (type, default, description). A test keeps this equal to the keys the code
#: reads (``conf.get*("clickstream", ...)``) and to :class:`clickstream.store.StoreConfig`'s fields and defaults.
CONFIG_OPTIONS: dict[str, tuple[str, str, str]] = {
    "conn_id": (
        "string",
        "clickstream_default",
        "Airflow Connection of the session store used by the REST API (operators and DAGs take their own "
        "``clickstream_conn_id`` / ``conn_id`` param, with the same default).",
    ),
    "api_migrate": (
        "boolean",
        "True",
        "The API server applies pending session-store migrations when it opens the store.",
    ),
    "dataset_base_path": (
        "string",
        "",
        "Where released batches are extracted, as ``<base>/<batch_id>/``: any ObjectStoragePath URI "
        "(``file:///data/clickstream``, ``s3://aws_default@bucket/clickstream``) or a local path. "
        "Empty: ``file://$AIRFLOW_HOME/clickstream/datasets``.",
    ),
    "release_schedule": (
        "string",
        "@daily",
        "Schedule of the ``clickstream_release`` DAG: a cron expression or preset; empty for manual runs "
        "only. Read when the DAG file is parsed.",
    ),
    "retention_days": (
        "float",
        "",
        "Released batches released more than this many days ago are deleted from the session store (with "
        "their sessions, events and improvement marks) by the ``clickstream_retention`` DAG; their datasets "
        "are kept. Empty: retention is off, nothing is deleted.",
    ),
    "max_request_bytes": (
        "integer",
        "8388608",
        "Largest REST request body in bytes (8 MiB); a larger one is answered 413 and nothing is stored.",
    ),
    "max_page": ("integer", "1000", "Largest ``limit`` of a batch page."),
    "max_events": ("integer", "1000", "Largest ``events_limit`` of a batch page."),
    "max_bulk_items": ("integer", "1000", "Most items (sessions + events) of one ``POST /clickstream/bulk``."),
    "max_results": ("integer", "1000", "Most ``search_results`` of a session."),
    "max_json_bytes": (
        "integer",
        "65536",
        "Largest free-form JSON object (``search_meta``, ``payload_filter``, a result's or an event's "
        "``meta``), in bytes of its UTF-8 JSON text (64 KiB).",
    ),
    "max_events_per_session": (
        "integer",
        "10000",
        "Events a session holds at most; later ones are counted ``over_limit`` and not stored.",
    ),
    "window_back_ms": (
        "integer",
        "86400000",
        "Live ingestion rejects timestamps older than this (milliseconds; 24 h). The history import has no window.",
    ),
    "window_ahead_ms": (
        "integer",
        "300000",
        "Live ingestion rejects timestamps further in the future than this (milliseconds; 5 min).",
    ),
    "analytics_top_n": (
        "integer",
        "1000",
        "Search analytics: the top this many queries (by sessions, by sessions without results, by sessions "
        "without a click) and objects (by impressions) are kept per released batch, with exact totals.",
    ),
    "label_event_types": (
        "string",
        "click",
        "Event types (comma-separated) that count as a positive interaction for the training-signal labels.",
    ),
    "label_max_position": (
        "integer",
        "20",
        "Training-signal labels: the examination propensity θ is estimated for positions 1..this; "
        "impressions further down are left out of the click model's fit.",
    ),
    "max_ips_weight": (
        "float",
        "10.0",
        "Training-signal labels: the largest inverse-propensity weight (1/θ, clipped) of a training pair.",
    ),
    "max_attempts": ("integer", "3", "An improvement mark that fails this many times ends as ``failed``."),
    "claim_stale_ms": (
        "integer",
        "3600000",
        "An improvement mark left in ``processing`` this long (milliseconds; 1 h) is handed out again.",
    ),
}

#: Connection extras passed to libpq (and shown in the connection form, first ones first). Anything else in
#: the extras (PostgresHook's ``cursor``, ``iam``, ...) is ignored; see :func:`clickstream.hooks.connection_url`.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "sslmode": {
        "label": "SSL mode",
        "description": "libpq sslmode: disable, allow, prefer (libpq's default), require, verify-ca, verify-full.",
        "schema": {
            "type": ["string", "null"],
            "enum": [None, "disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
        },
    },
    "sslrootcert": {
        "label": "SSL root certificate",
        "description": "Path of the CA certificate(s) that verify the server (verify-ca, verify-full).",
        "schema": {"type": ["string", "null"]},
    },
    "sslcert": {
        "label": "SSL client certificate",
        "description": "Path of the client certificate, for certificate authentication.",
        "schema": {"type": ["string", "null"]},
    },
    "sslkey": {
        "label": "SSL client key",
        "description": "Path of the client certificate's private key.",
        "schema": {"type": ["string", "null"]},
    },
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "description": "Seconds to wait for a connection before the store counts as unavailable.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "application_name": {
        "label": "Application name",
        "description": "Shown in pg_stat_activity.",
        "schema": {"type": ["string", "null"]},
    },
    "options": {
        "label": "Server options",
        "description": "libpq options, e.g. -c statement_timeout=60000",
        "schema": {"type": ["string", "null"]},
    },
    "target_session_attrs": {
        "label": "Target session attributes",
        "description": "With several hosts: which server to use (any, read-write, primary, ...).",
        "schema": {
            "type": ["string", "null"],
            "enum": [None, "any", "read-write", "read-only", "primary", "standby", "prefer-standby"],
        },
    },
}


def _config_section() -> dict[str, Any]:
    return {
        "clickstream": {
            "description": "The clickstream session store, its REST API and its DAGs.\n",
            "options": {
                key: {
                    "description": description,
                    "version_added": "0.1.0",
                    "type": kind,
                    "example": None,
                    "default": default,
                }
                for key, (kind, default, description) in CONFIG_OPTIONS.items()
            },
        }
    }


def get_provider_info() -> dict[str, Any]:
    """The provider metadata Airflow's ProvidersManager reads (schema: ``airflow/provider_info.schema.json``)."""
    return {
        "package-name": "clickstream",
        "name": "Clickstream",
        "description": "A search system's clickstream session store: connection type, hook, operators, DAGs "
        "and a REST API (the ``clickstream`` plugin).\n",
        "versions": [__version__],
        "integrations": [{"integration-name": "Clickstream", "tags": ["software"]}],
        "hooks": [{"integration-name": "Clickstream", "python-modules": ["clickstream.hooks"]}],
        "operators": [
            {
                "integration-name": "Clickstream",
                "python-modules": [
                    "clickstream.operators.release",
                    "clickstream.operators.extract",
                    "clickstream.operators.mark",
                    "clickstream.operators.metrics",
                    "clickstream.operators.import_history",
                    "clickstream.operators.erasure",
                    "clickstream.operators.retention",
                ],
            }
        ],
        # Listed for `airflow providers links`; the UI needs no registration (clickstream.operators.links).
        "extra-links": ["clickstream.operators.links.BatchLink", "clickstream.operators.links.DatasetLink"],
        "connection-types": [
            {
                "connection-type": "clickstream",
                "hook-class-name": "clickstream.hooks.ClickstreamHook",
                "hook-name": "Clickstream session store",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": [],
                    "relabeling": {"schema": "Database"},
                    "placeholders": {
                        "host": "db.example (the PostgreSQL server)",
                        "port": "5432",
                        "schema": "clickstream",
                        "login": "clickstream",
                        "extra": '{"keepalives_idle": 30}',
                    },
                },
            }
        ],
        "config": _config_section(),
    }
