"""Schemathesis against the server's own OpenAPI document (``/openapi.json``: the lorahub search API).

Every operation the document lists is called with requests schemathesis generates from it, valid
ones (with a token: the viewer's private adapters are searched too) and invalid ones (anonymous),
against the app of ``lorahub serve`` in this process (ASGI: the answers are the application's; the
HTTP server adds nothing the document describes) whose registry holds a pushed adapter, so that
searches and hash lookups return results to validate; on SQLite and PostgreSQL (different search SQL). Every answer
must not be a server error and must conform to the document: a declared status code, a declared
content type and a body matching the declared schema (errors too: ``{"error": ...}``).

``LORAHUB_SCHEMATHESIS_EXAMPLES`` sets the examples per operation and mode. (schemathesis'
``from_fixture`` pytest integration does not run under pytest 9, so the cases are drawn with
``operation.as_strategy`` under Hypothesis here.)
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hubkit import write_kohya_lora
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = int(os.environ.get("LORAHUB_SCHEMATHESIS_EXAMPLES", "80"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: What the document must describe (a route added to the lorahub API is tested without listing it here).
KNOWN = {"GET /api/lorahub/search", "GET /api/lorahub/by-hash/{hash}", "GET /api/lorahub/health"}


@pytest.fixture(scope="module")
def api_schema(local_hub, tmp_path_factory):  # noqa: ANN001, ANN201
    for repo, private in (("alice/schema-style", False), ("alice/schema-private", True)):
        local_hub.create_repo(repo, private=private)
        lora = write_kohya_lora(tmp_path_factory.mktemp("st") / "schema.safetensors", seed=int(private), title=repo)
        local_hub.upload(repo, "schema.safetensors", lora.read_bytes())
    assert len(local_hub.request("GET", "/api/lorahub/search", params={"q": "schema"}).json()) == 2
    schema = schemathesis.openapi.from_asgi("/openapi.json", local_hub.app)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    return schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_search_api_conforms_to_its_openapi(local_hub, api_schema, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= KNOWN
    headers = {"Authorization": f"Bearer {local_hub.tokens['alice']}"} if mode.is_positive else {}
    failures: list[str] = []
    calls = 0
    for op in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(mode))
        def run(case) -> None:  # noqa: ANN001 - schemathesis.Case
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (no parameters): only the positive mode applies
            assert not mode.is_positive and not op.path_parameters and not op.query, op.label
        except Exception as exc:  # noqa: BLE001 - Hypothesis re-raises the shrunk failure: collect it
            failures.append(f"{op.label} ({mode}): {type(exc).__name__}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert calls >= len(operations)
    assert local_hub.request("GET", "/api/lorahub/health").status_code == 200
