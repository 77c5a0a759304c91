"""Malformed input across the server's API surface (schemathesis on its OpenAPI document): no 5xx.

The server runs as a subprocess with the scripted fake CLI (fast and deterministic); the property
under test is the HTTP layer's validation, which does not depend on which CLI answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from .conftest import FakeCLI
from .server_process import start_server


@pytest.fixture
def api_schema(fake_cli: FakeCLI, tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    server = start_server(["--pool-size", "1", "--queue", "64"], tmp_path / "server.log")
    try:
        assert server.url.startswith("http://"), server.log.read_text()
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        schema.base_url = server.url  # type: ignore[attr-defined]
        yield schema
    finally:
        server.stop()
        assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_server_errors(api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/responses", "/v1/messages", "/health"}
    # Token counting answers 501 by design (tests/test_server_apis.py).
    operations = [op for op in operations if op.path != "/v1/messages/count_tokens"]
    if mode is schemathesis.GenerationMode.NEGATIVE:
        # Only a body can be given invalid values (a path parameter is any string).
        operations = [op for op in operations if op.body]
        assert [op.path for op in operations] == ["/v1/chat/completions", "/v1/responses", "/v1/messages"]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=30)

        check()


MALFORMED: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"not json", "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b"null", "application/json"),
    (b'{"model": "claude-max", "messages": "hi"}', "application/json"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "application/json"),
    (
        b'{"model": "claude-max", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
        "application/json",
    ),
    (
        b'{"model": "claude-max", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]}]}',
        "application/json",
    ),
    (b'{"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "application/json"),
    (
        b'{"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}}',
        "application/json",
    ),
    (
        b'{"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], "claude_max": {"max_retries": true}}',
        "application/json",
    ),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (b'{"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}', "text/plain"),
]


@pytest.mark.parametrize(("body", "content_type"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_are_400(api_schema: schemathesis.BaseSchema, body: bytes, content_type: str) -> None:
    import httpx

    url = api_schema.base_url  # type: ignore[attr-defined]
    response = httpx.post(
        f"{url}/v1/chat/completions", content=body, headers={"content-type": content_type}, timeout=30
    )
    if content_type != "application/json":
        assert response.status_code == 415  # a web page can send text/plain without a CORS preflight
    else:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
