"""--allow-remote-images fetches public images only: no loopback, private or metadata address, before or
after a redirect or a DNS answer that changes; bounded in count, bytes and time; one error text."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from llm_claude_max.errors import InvalidRequest
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.server import images
from llm_claude_max.server.app import AppConfig, create_app
from llm_claude_max.server.engine import Engine, EngineConfig

from .conftest import FakeCLI
from .test_plugin_real import png_bytes

PNG = png_bytes()


@dataclass
class Site:
    """A tiny HTTP server: /img.png, /redirect?to=URL, /big (n bytes of PNG type), /page.html."""

    address: str
    port: int = 0
    hits: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"

    def start(self) -> Site:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, kind = PNG, "image/png"
                if self.path.startswith("/big"):
                    body = PNG + b"\0" * int(self.path.split("=")[1])
                elif self.path == "/page.html":
                    body, kind = b"<html>secret</html>", "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer((self.address, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    """``public``: stands for a public web site (allowed by the test-only allow list); ``inside``: a
    service on this machine that must never be reached, on another loopback address, same port."""
    public = Site("127.0.0.1").start()
    inside = Site("127.0.0.2", public.port).start()
    try:
        yield public, inside
    finally:
        public.stop()
        inside.stop()


@pytest.fixture
def local() -> Iterator[Site]:
    """Another service on 127.0.0.1, on a port the allow list does not name."""
    site = Site("127.0.0.1").start()
    try:
        yield site
    finally:
        site.stop()


def fetcher(public: Site, limits: images.Limits | None = None, **kwargs: Any) -> images.Fetcher:
    return images.Fetcher(limits or images.Limits(), allow=[(public.address, public.port)], **kwargs)


async def test_a_public_image_is_fetched(sites: tuple[Site, Site]) -> None:
    public, _ = sites
    url = public.url("/img.png")
    block = (await fetcher(public).fetch_all([url]))[url]
    assert block["type"] == "image" and block["source"]["media_type"] == "image/png"


@pytest.mark.parametrize(
    "target",
    [
        "{inside}/img.png",
        "http://localhost:{local}/img.png",
        "http://[::1]:{local}/img.png",
        "http://[::ffff:127.0.0.1]:{local}/img.png",
        "http://0.0.0.0:{local}/img.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/img.png",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        "http://[64:ff9b::7f00:2]:{port}/img.png",
        "http://224.0.0.1/",
        "ftp://{address}:{port}/img.png",
        "http://user:pw@{address}:{port}/img.png",
    ],
)
@pytest.mark.parametrize("redirected", [False, True], ids=["direct", "redirected"])
async def test_addresses_inside_are_refused_with_one_text(
    sites: tuple[Site, Site], local: Site, target: str, redirected: bool
) -> None:
    public, inside = sites
    url = target.format(
        inside=f"http://{inside.address}:{inside.port}", port=inside.port, address=public.address, local=local.port
    )
    asked = public.url(f"/redirect?to={url}") if redirected else url
    with pytest.raises(InvalidRequest) as info:
        await fetcher(public).fetch_all([asked])
    assert str(info.value) == str(fetcher(public).failure(asked))
    assert inside.hits == [] and local.hits == []
    if not redirected and "user:pw" not in target and "ftp" not in target:
        assert public.hits == []


async def test_the_connection_goes_to_the_address_that_was_checked(sites: tuple[Site, Site]) -> None:
    """DNS rebinding: the name answers the public address first, then the inside one. Only one lookup is
    made per hop, and the connection goes to the address it returned."""
    public, inside = sites
    answers = [[public.address], [inside.address], [inside.address]]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[len(asked) - 1]

    url = f"http://images.test:{public.port}/img.png"
    await fetcher(public, resolve=resolve).fetch_all([url])
    assert asked == ["images.test"] and public.hits == ["/img.png"] and inside.hits == []


async def test_redirects_are_followed_a_few_times_only(sites: tuple[Site, Site]) -> None:
    public, _ = sites
    url = public.url("/img.png")
    for _ in range(images.MAX_REDIRECTS):
        url = public.url(f"/redirect?to={url}")
    assert url in await fetcher(public).fetch_all([url])
    with pytest.raises(InvalidRequest):
        await fetcher(public).fetch_all([public.url(f"/redirect?to={url}")])


async def test_bytes_count_and_type_are_bounded(sites: tuple[Site, Site]) -> None:
    public, _ = sites
    limits = images.Limits(max_images=3, max_image_bytes=100_000, max_request_bytes=150_000)
    with pytest.raises(InvalidRequest):
        await fetcher(public, limits).fetch_all([public.url("/big?n=200000")])
    urls = [public.url(f"/big?n={n}") for n in (60_000, 60_001, 60_002)]  # 180 KB in all
    with pytest.raises(InvalidRequest, match=r"big\?n=60002"):
        await fetcher(public, limits).fetch_all(urls)
    with pytest.raises(InvalidRequest, match="At most 3 image URLs"):
        await fetcher(public, limits).fetch_all([public.url(f"/img.png?{n}") for n in range(4)])
    with pytest.raises(InvalidRequest, match="must be public http"):
        await fetcher(public, limits).fetch_all([public.url("/page.html")])  # not an image: same text


# -- through the server ----------------------------------------------------------------------------


@pytest.fixture
async def app(fake_cli: FakeCLI, sites: tuple[Site, Site]) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
    engine = Engine(ClaudeCLI(), EngineConfig(pool_size=0, max_concurrency=1))
    config = AppConfig(allow_remote_images=True, image_fetcher=fetcher(sites[0]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(engine, config)), base_url="http://127.0.0.1"
    ) as client:
        try:
            yield client, engine
        finally:
            await engine.stop()


def image_request(*urls: str) -> dict[str, Any]:
    parts = [{"type": "text", "text": "what is this?"}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"model": "claude-max", "messages": [{"role": "user", "content": parts}]}


async def test_the_server_refuses_a_redirect_inside(
    app: tuple[httpx.AsyncClient, Engine], sites: tuple[Site, Site], fake_cli: FakeCLI
) -> None:
    client, _ = app
    public, inside = sites
    response = await client.post(
        "/v1/chat/completions", json=image_request(public.url(f"/redirect?to={inside.url('/img.png')}"))
    )
    assert response.status_code == 400
    assert "must be public http(s) addresses" in response.json()["error"]["message"]
    assert inside.hits == [] and fake_cli.invocations() == []


async def test_the_server_fetches_only_once_admitted(
    app: tuple[httpx.AsyncClient, Engine], sites: tuple[Site, Site], fake_cli: FakeCLI
) -> None:
    client, engine = app
    public, _ = sites
    async with engine.slot():  # the only slot is taken: the request queues
        pending = asyncio.ensure_future(client.post("/v1/chat/completions", json=image_request(public.url("/img.png"))))
        await asyncio.sleep(0.5)
        assert not pending.done() and public.hits == []
    response = await pending
    assert response.status_code == 200, response.text
    assert public.hits == ["/img.png"]
    user = fake_cli.stdin_lines()[-1]["message"]["content"]
    assert [b["type"] for b in user] == ["text", "image"]


async def test_too_many_urls_are_refused_before_admission(app: tuple[httpx.AsyncClient, Engine]) -> None:
    client, engine = app
    async with engine.slot():
        response = await client.post("/v1/chat/completions", json=image_request(*[f"http://x/{n}" for n in range(9)]))
    assert response.status_code == 400 and "At most 8 image URLs" in response.json()["error"]["message"]


def test_no_fetcher_option_reaches_the_command_line() -> None:
    """The allow list is for tests: `claude-max serve` has no option that sets it."""
    from llm_claude_max.cli import serve

    assert not any("allow" in (o.name or "") and "image" not in (o.name or "") and "remote" not in (o.name or "")
                   for o in serve.params)  # fmt: skip
