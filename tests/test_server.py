"""`claude-max serve` end to end: the server as a subprocess, the real CLI, the fake API, and the
official `openai` client (plus Pydantic AI, LangChain and the llm plugin) as callers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from . import proctable
from .fakeapi import FakeAnthropicAPI, Reply, five_hour_limit_headers
from .server_process import BIN, Server
from .test_plugin_real import png_bytes

pytestmark = pytest.mark.real_cli

KEY = "cmx-test-key-0123456789"


def chat(server: Server, **body: object) -> httpx.Response:
    payload = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(server.base + "/chat/completions", json=payload, timeout=60)


# -- the official openai client ------------------------------------------------------------------------


def test_openai_client_plain_and_streaming(server: Server, real_cli: FakeAnthropicAPI) -> None:
    client = server.client()
    completion = client.chat.completions.create(
        model="claude-max", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "Hello from the fake API."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        12,
        7,
    )
    assert completion.model == "claude-opus-5-5"
    extra = completion.model_extra or {}
    assert extra["claude_max"]["billing"]["route"] == "subscription" and extra["claude_max"]["billing"]["verified"]
    assert "Be brief." in json.dumps(real_cli.message_requests[0].body["system"])  # type: ignore[index]

    chunks = list(
        client.chat.completions.create(
            model="claude-max-sonnet",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake API."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 19
    assert real_cli.message_requests[-1].body["model"] == "claude-sonnet-5-5"  # type: ignore[index]


async def test_openai_async_client(server: Server) -> None:
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="claude-max", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "Hello from the fake API."
        stream = await client.chat.completions.create(
            model="claude-max", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == "Hello from the fake API."


def test_streaming_is_token_by_token(server: Server, real_cli: FakeAnthropicAPI) -> None:
    gate = threading.Event()
    reply = Reply(text="one two three four", gate=gate)
    real_cli.enqueue(reply)
    stream = server.client().chat.completions.create(
        model="claude-max", messages=[{"role": "user", "content": "count"}], stream=True
    )
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            gate.set()
    assert reply.gate_opened is True
    assert text == "one two three four"


# -- conversations ------------------------------------------------------------------------------------


def test_conversation_continues_the_live_process_and_callers_do_not_share(
    server: Server, real_cli: FakeAnthropicAPI
) -> None:
    real_cli.enqueue(
        Reply(text="Reply ONE"), Reply(text="Reply TWO"), Reply(text="Reply THREE"), Reply(text="Reply FOUR")
    )
    client = server.client(api_key="alice")
    history: list[dict[str, str]] = [{"role": "user", "content": "first"}]
    first = client.chat.completions.create(model="claude-max", messages=history)  # type: ignore[arg-type]
    history += [{"role": "assistant", "content": "Reply ONE"}, {"role": "user", "content": "second"}]
    second = client.chat.completions.create(model="claude-max", messages=history)  # type: ignore[arg-type]
    meta1, meta2 = (first.model_extra or {})["claude_max"], (second.model_extra or {})["claude_max"]
    assert meta2["continued"] == "live" and meta2["session_id"] == meta1["session_id"]
    body = real_cli.message_requests[1].body
    assert body is not None
    assert [m["role"] for m in body["messages"] if m["role"] != "system"] == ["user", "assistant", "user"]
    assert "first" not in json.dumps(body["messages"][-1])  # only the new message was sent

    # Another caller with the same messages gets its own session, seeded with the history.
    other = server.client(api_key="mallory").chat.completions.create(model="claude-max", messages=history)  # type: ignore[arg-type]
    meta3 = (other.model_extra or {})["claude_max"]
    assert meta3["continued"] == "seeded" and meta3["session_id"] != meta1["session_id"]
    # So does the same key with another `user`.
    fourth = client.chat.completions.create(model="claude-max", messages=history, user="bob")  # type: ignore[arg-type]
    assert (fourth.model_extra or {})["claude_max"]["continued"] == "seeded"


def test_conversation_resumes_when_the_process_is_gone(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve("--live-sessions", "0")
    client = server.client()
    first = client.chat.completions.create(model="claude-max", messages=[{"role": "user", "content": "first"}])
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "second"},
    ]
    second = client.chat.completions.create(model="claude-max", messages=history)  # type: ignore[arg-type]
    meta = (second.model_extra or {})["claude_max"]
    assert meta["continued"] == "resumed"
    assert meta["session_id"] == (first.model_extra or {})["claude_max"]["session_id"]
    assert len([m for m in real_cli.message_requests[1].body["messages"] if m["role"] != "system"]) == 3  # type: ignore[index]


# -- request mapping ----------------------------------------------------------------------------------


def test_images_and_pdfs(server: Server, real_cli: FakeAnthropicAPI) -> None:
    png = base64.b64encode(png_bytes()).decode()
    pdf = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}},
    ]
    server.client().chat.completions.create(model="claude-max", messages=[{"role": "user", "content": content}])  # type: ignore[misc, list-item]
    blocks = [
        b
        for m in real_cli.message_requests[0].body["messages"]
        for b in (m["content"] if isinstance(m["content"], list) else [])
    ]  # type: ignore[index]
    assert any(b.get("type") == "image" and b["source"]["data"] == png for b in blocks)
    assert any(b.get("type") == "document" and b["source"]["data"] == pdf for b in blocks)
    remote = chat(
        server,
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
        ],
    )
    assert remote.status_code == 400 and "--allow-remote-images" in remote.json()["error"]["message"]


def test_json_schema(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(Reply(structured={"name": "Ada", "age": 36}))
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    completion = server.client().chat.completions.create(
        model="claude-max",
        messages=[{"role": "user", "content": "Invent a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    failed = chat(server, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "structured_output_missing"


def test_parameters_are_applied_refused_or_named_as_ignored(server: Server, real_cli: FakeAnthropicAPI) -> None:
    response = chat(server, temperature=0.2, top_p=0.5, seed=1, max_tokens=10, reasoning_effort="high")
    assert response.status_code == 200
    assert response.headers["x-claude-max-ignored"] == "seed, temperature, top_p"
    assert real_cli.message_requests[0].body["max_tokens"] == 10  # type: ignore[index]
    refused = [
        ({"logprobs": True}, "`logprobs` is not supported: log probabilities"),
        ({"top_logprobs": 2}, "`top_logprobs` is not supported"),
        ({"logit_bias": {"50256": -100}}, "cannot bias tokens"),
        ({"n": 2}, "`n` must be 1"),
        # Unknown names are refused, never copied into a header (they once made a finished answer a 500).
        ({"temperature€": 1}, "Unrecognized request argument supplied: temperature€"),
        ({"a\nb": 2}, "Unrecognized request argument supplied"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4 non-empty stop strings"),
    ]
    for body, message in refused:
        answer = chat(server, **body)
        assert answer.status_code == 400 and message in answer.json()["error"]["message"], body


def test_reasoning_effort_maps_to_effort(server: Server, real_cli: FakeAnthropicAPI) -> None:
    assert chat(server, reasoning_effort="high").status_code == 200
    assert real_cli.message_requests[0].body["output_config"]["effort"] == "high"  # type: ignore[index]


# -- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "gpt-4o"}, 404, "model_not_found"),
        ({"messages": []}, 400, "invalid_request"),
        ({"messages": 5}, 400, "invalid_request"),
        ({"messages": [{"role": [], "content": "x"}]}, 400, "invalid_request"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "invalid_request"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            400,
            "invalid_request",
        ),
        ({"tools": [{"type": "web_search"}]}, 400, "invalid_request"),
        ({"n": 3}, 400, "invalid_request"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400, "invalid_request"),
    ],
)
def test_bad_requests(server: Server, body: dict[str, object], status: int, code: str) -> None:
    response = chat(server, **body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_openai_client_sees_precise_errors(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(*[Reply(status=529) for _ in range(3)])
    response = chat(server, claude_max={"max_retries": 0})
    assert (
        response.status_code == 503
        and response.headers["retry-after"]
        and response.json()["error"]["code"] == "api_error"
    )
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("gpt-4o")
    # Last: from now on the server refuses at once until the reset (tests/test_usage.py).
    reset = int(time.time()) + 3600
    real_cli.enqueue(Reply(status=429, error_type="rate_limit_error", headers=five_hour_limit_headers(reset)))
    with pytest.raises(openai.RateLimitError) as info:
        server.client().chat.completions.create(model="claude-max", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "usage_limit_reached"
    assert 3500 <= int(info.value.response.headers["retry-after"]) <= 3600


def test_not_logged_in_is_503_and_nothing_is_sent(serve: Callable[..., Server], real_cli: FakeAnthropicAPI) -> None:
    server = serve()
    response = chat(server)
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_logged_in"
    assert real_cli.message_requests == []
    assert "Every request will fail" in server.log.read_text()


def test_api_key_in_the_environment_is_never_billed(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve(env={"ANTHROPIC_API_KEY": "sk-ant-api03-SERVERTESTKEY-9999"})
    assert chat(server).status_code == 200
    request = real_cli.message_requests[0]
    assert (
        request.header("x-api-key") is None
        and request.header("authorization") == "Bearer sk-ant-oat01-FAKEACCESSTOKEN-aaaa"
    )


# -- endpoints, security ------------------------------------------------------------------------------------


def test_models_and_health(server: Server) -> None:
    models = [m.id for m in server.client().models.list()]
    assert models[0] == "claude-max" and "claude-max-sonnet" in models
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    deep = httpx.get(server.url + "/health/deep", timeout=30).json()
    assert deep["status"] == "ok" and deep["billing"]["route"] == "subscription"
    assert httpx.get(server.url + "/nope").json()["error"]["code"] == "not_found"
    assert httpx.delete(server.url + "/v1/models").status_code == 405
    assert httpx.get(server.url + "/openapi.json").json()["openapi"].startswith("3.")


def test_key_required_when_asked(serve: Callable[..., Server], login: Path) -> None:
    server = serve("--require-key", env={"CLAUDE_MAX_SERVER_KEY": KEY})
    assert chat(server).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    assert next(m.id for m in server.client(api_key=KEY).models.list()) == "claude-max"
    assert httpx.get(server.url + "/health").status_code == 200  # liveness stays public
    # The variable alone does not make a loopback server require a key.
    assert chat(serve(env={"CLAUDE_MAX_SERVER_KEY": KEY})).status_code == 200
    short = subprocess.run(
        [str(BIN / "claude-max"), "serve", "--require-key", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CLAUDE_MAX_SERVER_KEY": "short"},
    )
    assert short.returncode == 1 and "shorter than 16" in short.stderr


def test_non_loopback_needs_a_flag_a_key_and_is_reported(serve: Callable[..., Server], login: Path) -> None:
    refused = subprocess.run(
        [str(BIN / "claude-max"), "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30, check=False
    )
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr
    server = serve("--host", "0.0.0.0", "--allow-remote", env={"CLAUDE_MAX_SERVER_KEY": KEY})
    assert "serving other people" in server.log.read_text().lower() or "not allow serving" in server.log.read_text()
    port = server.url.rsplit(":", 1)[1]
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    doctor = subprocess.run(
        [str(BIN / "claude-max"), "doctor", "--offline", "--json", "tos"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    tier = next(c for c in json.loads(doctor.stdout)["checks"] if c["id"] == "tos.tier")
    assert any(f["status"] == "fail" and "beyond this machine" in f["summary"] for f in tier["findings"])


def test_no_cors_by_default(server: Server) -> None:
    response = httpx.options(
        server.base + "/chat/completions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_requests_a_web_page_could_make_are_refused(server: Server) -> None:
    body = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}
    url = server.base + "/chat/completions"
    assert httpx.post(url, json=body, headers={"origin": "https://evil.example"}).status_code == 403
    assert httpx.get(server.base + "/models", headers={"sec-fetch-site": "cross-site"}).status_code == 403
    port = server.url.rsplit(":", 1)[1]
    rebound = httpx.post(url, json=body, headers={"host": f"evil.example:{port}"})  # DNS rebinding
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host"
    form = httpx.post(url, content=json.dumps(body), headers={"content-type": "text/plain"})
    assert form.status_code == 415
    assert httpx.post(url, json=body, headers={"host": f"localhost:{port}"}, timeout=60).status_code == 200


def test_allowed_cors_origin(serve: Callable[..., Server], login: Path) -> None:
    server = serve("--cors-origin", "https://app.example")
    preflight = httpx.options(
        server.base + "/chat/completions",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    response = httpx.post(
        server.base + "/chat/completions",
        json={"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]},
        headers={"origin": "https://app.example"},
        timeout=60,
    )
    assert response.status_code == 200


def test_body_size_limit(serve: Callable[..., Server], login: Path) -> None:
    server = serve("--max-body-mb", "1")
    response = chat(server, messages=[{"role": "user", "content": "x" * 2_000_000}])
    assert response.status_code == 413


# -- processes --------------------------------------------------------------------------------------------


def test_concurrency_limit_and_queue(serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI) -> None:
    real_cli.default = Reply(text="slow answer here", chunk_delay=0.3)
    server = serve("--max-concurrency", "2", "--queue", "3", "--pool-size", "2")

    def one(n: int) -> httpx.Response:
        return httpx.post(
            server.base + "/chat/completions",
            json={"model": "claude-max", "messages": [{"role": "user", "content": f"request {n}"}]},
            timeout=120,
        )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "server_busy"
        else:
            assert response.json()["choices"][0]["message"]["content"] == "slow answer here"


def test_client_disconnect_kills_its_cli_within_a_second(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    gate = threading.Event()
    real_cli.enqueue(Reply(text="one two three", gate=gate, gate_timeout=30))
    server = serve("--pool-size", "0", "--live-sessions", "0")
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            server.base + "/chat/completions",
            json={"model": "claude-max", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as response,
    ):
        for line in response.iter_lines():
            if '"content":"one ' in line:
                # Checked before `break`: leaving the loop already closes the connection.
                assert server.children(), "the request's CLI should be running"
                break
        else:
            pytest.fail("the stream ended before its first delta")
    gone_by = time.monotonic() + 1.0
    while server.children() and time.monotonic() < gone_by:
        time.sleep(0.02)
    assert server.children() == []
    gate.set()


def test_a_non_streaming_caller_that_gives_up_stops_its_cli(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    gate = threading.Event()
    real_cli.enqueue(Reply(text="one two three", gate=gate, gate_timeout=30))
    server = serve("--pool-size", "0", "--live-sessions", "0")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.base + "/chat/completions",
            json={"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]},
            timeout=httpx.Timeout(5.0, read=3.0),
        )
    assert len(real_cli.message_requests) == 1  # its CLI was running, held at the gate, when the caller left
    gone_by = time.monotonic() + 1.5
    while server.children() and time.monotonic() < gone_by:
        time.sleep(0.02)
    assert server.children() == []
    gate.set()
    assert chat(server).status_code == 200  # its slot was freed


def test_pool_size_counts_processes(serve: Callable[..., Server], login: Path) -> None:
    server = serve("--pool-size", "2")
    deadline = time.monotonic() + 15
    while httpx.get(server.url + "/health/deep", timeout=30).json()["engine"]["warm"] < 2:
        assert time.monotonic() < deadline, "the pool never held 2 warm processes"
        time.sleep(0.1)


def test_a_second_server_leaves_the_first_ones_children_alone(serve: Callable[..., Server], login: Path) -> None:
    first = serve("--pool-size", "1")
    deadline = time.monotonic() + 10
    while not first.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = first.children()
    assert children
    serve("--pool-size", "0")
    time.sleep(0.5)
    assert all(proctable.is_running(pid) for pid in children)
    assert chat(first).status_code == 200


def test_shutdown_stops_every_child(serve: Callable[..., Server], login: Path) -> None:
    server = serve("--pool-size", "2")
    chat(server)  # leaves a live conversation and warm processes
    deadline = time.monotonic() + 10
    while len(server.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.children()) >= 2
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful shutdown
    assert "Traceback" not in server.log.read_text()
    # the conftest orphan check fails the test if any `claude` survived


def test_sigterm_during_requests_answers_503_and_ends_streams_with_an_error_event(
    server: Server, real_cli: FakeAnthropicAPI
) -> None:
    gate = threading.Event()
    real_cli.default = Reply(text="one two three", gate=gate, gate_timeout=60)
    answers: dict[str, object] = {}

    def waiting() -> None:
        answers["json"] = chat(server)

    def streaming() -> None:
        lines = []
        with httpx.stream("POST", server.base + "/chat/completions", json={"model": "claude-max", "stream": True,
                          "messages": [{"role": "user", "content": "hi"}]}, timeout=60) as response:  # fmt: skip
            for line in response.iter_lines():
                lines.append(line)
                if '"content":"one ' in line:
                    answers["streaming"] = True
        answers["stream"] = lines

    threads = [threading.Thread(target=waiting), threading.Thread(target=streaming)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while (len(real_cli.message_requests) < 2 or "streaming" not in answers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(real_cli.message_requests) == 2, "both requests should be waiting for the API"
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    gate.set()
    response = answers["json"]
    assert isinstance(response, httpx.Response) and response.status_code == 503
    assert response.json()["error"]["code"] == "server_stopping"
    stream = answers["stream"]
    assert isinstance(stream, list) and any('"code":"server_stopping"' in line for line in stream), stream
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Traceback" not in server.log.read_text()


def test_repeating_an_exchange_does_not_leak_processes(serve: Callable[..., Server], login: Path) -> None:
    server = serve("--pool-size", "1", "--live-sessions", "2")
    for _ in range(5):
        assert chat(server).status_code == 200  # the same caller, the same messages, the same answer
    deadline = time.monotonic() + 5
    while len(server.children()) > 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.children()) <= 3  # 1 warm + at most 2 live


def test_sigterm_removes_the_server_record(serve: Callable[..., Server], login: Path) -> None:
    from llm_claude_max.server import records

    server = serve()
    assert (records.directory() / f"{server.proc.pid}.json").exists()
    server.stop()
    assert not (records.directory() / f"{server.proc.pid}.json").exists()


def test_children_of_a_killed_server_die_with_it(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    """SIGKILL leaves the server no time to stop its children: the kernel's parent-death signal does
    (Linux). The next server's reaping of a dead server's record is tested in test_records.py."""
    real_cli.enqueue(Reply(mode="stall_body", stall_seconds=60))
    first = serve("--pool-size", "0")

    def doomed_request() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its server is killed below
            chat(first)

    threading.Thread(target=doomed_request, daemon=True).start()
    deadline = time.monotonic() + 10
    while not first.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = first.children()
    assert orphans
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(proctable.is_running(pid) for pid in orphans):
        assert time.monotonic() < deadline, "the children outlived their server"
        time.sleep(0.05)


# -- frameworks ----------------------------------------------------------------------------------------


async def test_pydantic_ai(server: Server) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    # Our own client, closed here: pydantic-ai's cached default client is never closed.
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        provider = OpenAIProvider(openai_client=client)
        result = await Agent(OpenAIChatModel("claude-max", provider=provider), instructions="Be brief.").run("hi")
    assert result.output == "Hello from the fake API."


def test_langchain(server: Server) -> None:
    from langchain_openai import ChatOpenAI

    with httpx.Client() as http_client:  # LangChain's own default client is cached and never closed
        llm = ChatOpenAI(
            model="claude-max",
            base_url=server.base,
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            http_client=http_client,
        )
        assert llm.invoke("hi").content == "Hello from the fake API."
        assert "".join(str(c.content) for c in llm.stream("hi")) == "Hello from the fake API."


# -- the llm plugin through the server --------------------------------------------------------------------


def test_llm_plugin_routes_through_the_server(
    server: Server, real_cli: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm

    monkeypatch.setenv("CLAUDE_MAX_SERVER", server.url)
    real_cli.enqueue(Reply(text="Via the server."), Reply(text="Second via the server."))
    conversation = llm.get_model("claude-max").conversation()
    first = conversation.prompt("first")
    assert first.text() == "Via the server."
    second = conversation.prompt("second")
    assert second.text() == "Second via the server."
    assert second.response_json is not None
    assert second.response_json["continued"] == "live" and second.response_json["via"] == server.url
    assert second.usage().input == 12


def test_llm_plugin_through_the_server_keeps_reasoning_and_refuses_local_options(
    server: Server, real_cli: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm

    monkeypatch.setenv("CLAUDE_MAX_SERVER", server.url)
    real_cli.enqueue(Reply(text="Answer.", thinking="Thinking it over."))
    events = list(llm.get_model("claude-max").prompt("q").stream_events())
    assert [e.chunk for e in events if e.type == "reasoning"] == ["Thinking it over."]
    with pytest.raises(llm.ModelError, match="allow_overage cannot apply through claude-max serve"):
        llm.get_model("claude-max").prompt("q", allow_overage=True).text()


async def test_llm_async_through_the_server_times_out_without_cancelling_the_caller(
    server: Server, real_cli: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm

    from llm_claude_max.errors import ClaudeTimeout

    monkeypatch.setenv("CLAUDE_MAX_SERVER", server.url)
    gate = threading.Event()
    real_cli.enqueue(Reply(text="one two three", gate=gate, gate_timeout=30))
    chunks = []
    # The deadline leaves room for a loaded machine to deliver the first chunk (a warm process answers in
    # about 0.1 s); the caller's own work then outlasts it.
    with pytest.raises(ClaudeTimeout, match="within 6 s"):
        async for chunk in llm.get_async_model("claude-max").prompt("hi", timeout=6):
            chunks.append(chunk)
            await asyncio.sleep(6.5)  # the caller's own work, past the deadline: never cancelled
    gate.set()
    assert chunks[0] == "one "  # (events already buffered may still arrive after the deadline)


def test_llm_plugin_maps_server_errors(serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    import llm

    from llm_claude_max.errors import NotLoggedIn

    server = serve()  # no login
    monkeypatch.setenv("CLAUDE_MAX_SERVER", server.url)
    with pytest.raises(NotLoggedIn) as info:
        llm.get_model("claude-max").prompt("hi").text()
    assert isinstance(info.value, llm.ModelError)
    monkeypatch.setenv("CLAUDE_MAX_SERVER", "http://127.0.0.1:9")
    with pytest.raises(llm.ModelError, match="cannot be reached"):
        llm.get_model("claude-max").prompt("hi").text()
