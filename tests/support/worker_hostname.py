"""``[core] hostname_callable`` of the scale-out test's Celery workers: the name in ``$CLICKSTREAM_WORKER_HOSTNAME``.

The test runs its two workers on one machine, where ``socket.getfqdn()`` (Airflow's default) would give both
the same name; each worker sets this callable and its own name, so a task instance's ``hostname`` tells which
worker ran it, as it would on two machines. Kept apart from :mod:`tests.support.scaleout` so that the task
processes import nothing else of the tests.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """``$CLICKSTREAM_WORKER_HOSTNAME``, else the machine's FQDN."""
    return os.environ.get("CLICKSTREAM_WORKER_HOSTNAME") or socket.getfqdn()
