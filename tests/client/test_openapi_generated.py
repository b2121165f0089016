"""A third-party check of the OpenAPI document: ``openapi-python-client`` generates a client from the served
``/clickstream/openapi.json``, and the generated code registers a session, sends a bulk request and pages a batch.

The generator runs as a tool in its own environment (``uv tool run``, pinned below): it needs a ``typer`` older
than the one Airflow's ``fastapi-cli`` pins, so it cannot be installed into the project's venv. The code it
generates needs only ``httpx``, ``attrs`` and ``python-dateutil``, which the venv has."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.apiserver import ApiServer

pytestmark = pytest.mark.slow

GENERATOR = "openapi-python-client==0.29.1"
PACKAGE = "clickstream_api_generated"


def _generate(document: bytes, workdir: Path) -> Path:
    spec = workdir / "openapi.json"
    spec.write_bytes(document)
    out = workdir / PACKAGE
    uv = Path(sys.executable).parent / "uv"
    done = subprocess.run(
        [str(uv), "tool", "run", "--from", GENERATOR, "openapi-python-client", "generate"]
        + ["--path", str(spec), "--output-path", str(out), "--meta", "none"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # anything the generator could not express is a defect of the document
    assert "Warning" not in output and "Unable to" not in output, output
    return out


def test_a_generated_client_registers_bulks_and_pages(server: ApiServer, tmp_path: Path) -> None:
    document = httpx.get(f"{server.base_url}/clickstream/openapi.json", timeout=30)
    assert document.status_code == 200
    _generate(document.content, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        generated: Any = importlib.import_module(PACKAGE)
        register = importlib.import_module(f"{PACKAGE}.api.sessions.register_session_session_post")
        bulk = importlib.import_module(f"{PACKAGE}.api.sessions.bulk_bulk_post")
        page = importlib.import_module(f"{PACKAGE}.api.batches.get_batch_sessions_batch_sessions_get")
        m: Any = importlib.import_module(f"{PACKAGE}.models")

        now = time.time_ns() // 1_000_000
        sid, other = (f"gen-{uuid.uuid4().hex[:10]}" for _ in range(2))
        client = generated.AuthenticatedClient(
            base_url=f"{server.base_url}/clickstream", token=server.token("admin"), raise_on_unexpected_status=True
        )
        with client:
            registered = register.sync(
                client=client,
                body=m.SessionIn(
                    session_id=sid,
                    search_query="generated client",
                    search_results=[m.SearchResult(object_id="obj-1", rank=1.0)],
                    created_at=now,
                ),
            )
            assert isinstance(registered, m.RegisterResult), registered
            assert registered.status == m.RegisterResultStatus.REGISTERED

            result = bulk.sync(
                client=client,
                body=m.BulkIn(
                    sessions=[m.SessionIn(session_id=other, search_results=[], created_at=now)],
                    events=[m.BulkInBulkEventIn(event_id="e1", object_id="obj-1", session_id=sid, created_at=now)],
                ),
            )
            assert isinstance(result, m.BulkResult), result
            assert (result.sessions.registered, result.events.stored, result.rejected) == (1, 1, [])

            first = page.sync(client=client, batch_id=registered.batch_id, limit=1000, events_limit=10)
            assert isinstance(first, m.BatchSessionsPage), first
            ours = {s.session_id: s for s in first.sessions if s.session_id in (sid, other)}
            assert set(ours) == {sid, other}
            assert [e.event_id for e in ours[sid].events] == ["e1"]
            after = page.sync(client=client, batch_id=registered.batch_id, after_number=first.last_number, limit=10)
            assert isinstance(after, m.BatchSessionsPage) and after.sessions == []
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
