"""Masking for anything that might be a secret. The doctor never shows a credential whole.

A fixed-width mask plus the last four characters (so the length is not revealed), keeping a known
type prefix so an API key (``sk-ant-api03-``) can be told from an OAuth token (``sk-ant-oat01-``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "*" * 16
_PREFIX = re.compile(r"^(sk-ant-[a-z]+\d*-)")
_EMBEDDED = re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}")


def mask(value: str) -> str:
    """``sk-ant-api03-****************dddd``; short values are masked entirely."""
    prefix_match = _PREFIX.match(value)
    prefix = prefix_match.group(1) if prefix_match else ""
    rest = value[len(prefix) :]
    if len(rest) < 12:
        return prefix + MASK
    return prefix + MASK + rest[-4:]


def mask_embedded(text: str) -> str:
    """Mask every Anthropic-looking key inside free text (an apiKeyHelper command, a header list)."""
    return _EMBEDDED.sub(lambda m: mask(m.group(0)), text)


def mask_url(url: str) -> str:
    """Hide a URL's user-info part, the values of its query (``?key=...``; a part without ``=`` whole)
    and its fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
    except ValueError:
        return mask(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=f"{MASK}@{host}")
    if parts.query:
        query = "&".join(f"{part.split('=', 1)[0]}={MASK}" if "=" in part else MASK for part in parts.query.split("&"))
        parts = parts._replace(query=query)
    if parts.fragment:
        parts = parts._replace(fragment=MASK)
    return mask_embedded(urlunsplit(parts))
