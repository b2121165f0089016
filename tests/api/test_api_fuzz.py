"""Property-based fuzzing of the clickstream API from its own OpenAPI document (schemathesis).

Cases are generated from ``/clickstream/openapi.json`` (valid and invalid ones) and sent, with an admin
token, to Airflow's real API server app in process (ASGI transport). Every answer must be documented:
no 5xx, a status code the document declares for the route, and a body that matches the declared schema.
Half of the cases are steered onto seeded data (a known session, the seeded batch, a timestamp inside the
live window) so that the success paths are exercised too, not only 404s and 422s.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.bodies import click, now, session_body
from tests.support.connections import airflow_conn_uri
from tests.support.inprocess import mint_token

pytestmark = pytest.mark.slow

#: Examples per backend; keeps the whole module well under a minute on a small machine.
MAX_EXAMPLES = 150


def _steer(case: Any, seeded: dict[str, Any], pick: int) -> None:
    """Point a generated case at seeded data (in place); ``pick`` varies which id it uses."""
    if isinstance(case.query, dict) and "batch_id" in case.query:
        case.query["batch_id"] = seeded["batch_id"]
    if isinstance(case.query, dict) and "session_id" in case.query:
        case.query["session_id"] = seeded["session_ids"][pick % len(seeded["session_ids"])]
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("session_id"), str):
            body["session_id"] = seeded["session_ids"][pick % len(seeded["session_ids"])]
        if isinstance(body.get("user_id"), str) and "session_id" not in body:
            body["user_id"] = "user-123"
        if isinstance(body.get("created_at"), int):
            body["created_at"] = now()
        for event in body.get("events") or []:
            if isinstance(event, dict) and isinstance(event.get("created_at"), int):
                event["created_at"] = now()


class TestOpenApiFuzz:
    def test_every_answer_is_documented_and_no_5xx(
        self, airflow_app: Any, store_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import schemathesis
        from fastapi.testclient import TestClient
        from schemathesis import GenerationMode
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        from clickstream.store import SessionStore

        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", airflow_conn_uri(store_url))
        headers = {"Authorization": f"Bearer {mint_token(airflow_app, 'admin')}"}
        checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
        statuses: list[int] = []

        with TestClient(airflow_app):  # lifespan: opens and migrates the store, disposes of it at the end
            store = SessionStore.from_url(store_url)
            try:
                batch_id = store.register_session(session_body("sess-1")).batch_id
                store.push_events("sess-1", [click()])
                store.register_session(session_body("sess-2", user_id="user-456"))
            finally:
                store.dispose()
            seeded = {"batch_id": batch_id, "session_ids": ["sess-1", "sess-2", "sess-unknown"]}

            schema = schemathesis.openapi.from_asgi("/clickstream/openapi.json", airflow_app)
            strategy = schema.as_strategy(GenerationMode.POSITIVE) | schema.as_strategy(GenerationMode.NEGATIVE)

            @given(case=strategy, steer=st.booleans(), pick=st.integers(0, 2))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any, steer: bool, pick: int) -> None:
                if steer:
                    _steer(case, seeded, pick)
                response = case.call(headers=headers)
                statuses.append(response.status_code)
                case.validate_response(response, checks=checks, headers=headers)

            fuzz()

        assert 200 in statuses, "no case reached a success path"
        assert {404, 422} <= set(statuses)
