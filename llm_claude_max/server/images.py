"""Remote images (``--allow-remote-images``): fetched after admission, bounded in size."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ..content import Block, media_block
from ..errors import InvalidRequest


async def fetch(urls: Sequence[str], *, max_bytes: int) -> dict[str, Block]:
    """Each URL's image as a content block. Any failure is an :class:`InvalidRequest`."""
    fetched: dict[str, Block] = {}
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=True) as client:
        for url in dict.fromkeys(urls):
            try:
                async with client.stream("GET", url) as response:
                    response.raise_for_status()
                    data = b""
                    async for piece in response.aiter_bytes():
                        data += piece
                        if len(data) > max_bytes:
                            raise InvalidRequest(f"The image at {url} is larger than {max_bytes} bytes.")
                    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            except httpx.HTTPError as exc:
                raise InvalidRequest(f"Could not fetch the image at {url}: {exc}") from None
            fetched[url] = media_block(media_type, data)
    return fetched
