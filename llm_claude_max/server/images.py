"""Fetching the http(s) image URLs of a request (``--allow-remote-images``) without opening this
machine's network to whoever can send a request.

- Only public addresses: every name is resolved here and each address checked (loopback, private,
  link-local and cloud metadata, shared, multicast, reserved and unspecified ones are refused, also
  inside IPv4-mapped and NAT64 IPv6 addresses). The connection goes to the address that was checked,
  never to a second lookup, so DNS rebinding between the check and the connection cannot win.
- Redirects are followed here (at most :data:`MAX_REDIRECTS`), each target checked the same way.
- No proxy from the environment (a proxy would connect on our behalf, unchecked).
- Bounded: images per request, bytes per image and per request, time per image and per request.
- One error text for every failure (refused address, DNS, refused connection, timeout, HTTP status,
  size, type): a caller cannot map the network by the reasons; the server log has them.

The app fetches after admission (a request waits for its slot before it costs network or memory) and
validates the rest of the request before it (see ``server/app.py``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from ..content import Block, media_block
from ..errors import InvalidRequest

logger = logging.getLogger("llm_claude_max.server.images")

MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Limits:
    max_images: int = 8
    max_image_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 20 * 1024 * 1024
    image_seconds: float = 10.0
    request_seconds: float = 30.0


class Refused(Exception):
    """Why one image was not fetched (logged, never shown to the caller)."""


def public(address: IPAddress) -> bool:
    """True for an address on the public internet; False for this machine, its networks and metadata."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None
        )
        if embedded is not None:
            return public(embedded)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class Fetcher:
    """Fetches image URLs for one server. ``allow`` is for tests only (the test's own server on
    loopback): ``(address, port)`` pairs let through although not public. It is no user option."""

    def __init__(
        self,
        limits: Limits = Limits(),
        *,
        resolve: Resolver = system_resolver,
        allow: Iterable[tuple[str, int]] = (),
    ) -> None:
        self.limits = limits
        self.resolve = resolve
        self.allow = {(str(ipaddress.ip_address(a)), p) for a, p in allow}

    def failure(self, url: str) -> InvalidRequest:
        mb = self.limits.max_image_bytes / (1024 * 1024)
        return InvalidRequest(
            f"Could not fetch the image at {url}: image URLs must be public http(s) addresses that answer with a "
            f"PNG, JPEG, GIF, WebP or PDF of at most {mb:g} MB."
        )

    @staticmethod
    def placeholders(urls: Sequence[str]) -> dict[str, Block]:
        """Stand-ins for the images, to validate a request before it is admitted and fetched."""
        return {url: media_block("image/png", b"") for url in urls}

    def check_count(self, urls: Sequence[str]) -> None:
        """Before admission: too many URLs is refused at once."""
        if len(urls) > self.limits.max_images:
            raise InvalidRequest(f"At most {self.limits.max_images} image URLs can be fetched per request.")

    async def fetch_all(self, urls: Sequence[str]) -> dict[str, Block]:
        """Every URL's image block; the first failure is an :class:`InvalidRequest` with the uniform text."""
        self.check_count(urls)
        fetched: dict[str, Block] = {}
        budget = [self.limits.max_request_bytes]
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=self.limits.image_seconds
        ) as client:
            try:
                async with asyncio.timeout(self.limits.request_seconds):
                    for url in dict.fromkeys(urls):
                        fetched[url] = await self._fetch(client, url, budget)
            except TimeoutError:
                logger.warning("image fetch: the request's %g s were used up", self.limits.request_seconds)
                raise self.failure(next(u for u in urls if u not in fetched)) from None
        return fetched

    async def _fetch(self, client: httpx.AsyncClient, url: str, budget: list[int]) -> Block:
        try:
            async with asyncio.timeout(self.limits.image_seconds):
                media_type, data = await self._follow(client, url, budget)
            return media_block(media_type, data)
        except (Refused, httpx.HTTPError, OSError, InvalidRequest, TimeoutError, ValueError) as exc:
            logger.warning("image fetch refused or failed for %s: %s", url, exc or type(exc).__name__)
            raise self.failure(url) from None

    async def _follow(self, client: httpx.AsyncClient, url: str, budget: list[int]) -> tuple[str, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            request = await self._pinned_request(client, url)
            async with client.stream("GET", request.url, headers=request.headers, extensions=request.extensions) as r:
                if r.status_code in REDIRECTS and "location" in r.headers:
                    url = urljoin(url, r.headers["location"])
                    continue
                if r.status_code != 200:
                    raise Refused(f"HTTP {r.status_code}")
                media_type = r.headers.get("content-type", "").split(";")[0].strip().lower()
                return media_type, await self._read(r, budget)
        raise Refused(f"more than {MAX_REDIRECTS} redirects")

    async def _pinned_request(self, client: httpx.AsyncClient, url: str) -> httpx.Request:
        """A request to the checked address of ``url``'s host, with the host's name in Host and SNI."""
        target = httpx.URL(url)
        if target.scheme not in ("http", "https") or not target.host or target.userinfo:
            raise Refused("not a plain http(s) URL")
        port = target.port or (443 if target.scheme == "https" else 80)
        name = target.raw_host.decode("ascii")
        try:
            addresses = [ipaddress.ip_address(target.host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in await self.resolve(name, port)]
        if not addresses:
            raise Refused("the name has no address")
        for address in addresses:  # every address: a name that also points inside is refused
            if not public(address) and (str(address), port) not in self.allow:
                raise Refused(f"{address} is not a public address")
        extensions: dict[str, Any] = {"sni_hostname": name} if target.scheme == "https" else {}
        return client.build_request(
            "GET",
            target.copy_with(host=str(addresses[0])),
            headers={
                "Host": target.netloc.decode("ascii"),
                "Accept": "image/*, application/pdf",
                "Accept-Encoding": "identity",  # no decompression bomb: the bytes counted are the bytes kept
            },
            extensions=extensions,
        )

    async def _read(self, response: httpx.Response, budget: list[int]) -> bytes:
        limit = min(self.limits.max_image_bytes, budget[0])
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(f"Content-Length {declared} is over the limit")
        if response.headers.get("content-encoding", "identity") != "identity":
            raise Refused("a compressed answer although none was accepted")
        data = bytearray()
        async for piece in response.aiter_raw():
            data += piece
            if len(data) > limit:
                raise Refused("more bytes than the limit")
        budget[0] -= len(data)
        return bytes(data)
