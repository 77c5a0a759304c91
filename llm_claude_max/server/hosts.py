"""The ``Host`` header, parsed strictly: a server on loopback answers only requests that name it by a
loopback name (a web page that rebinds its own domain to 127.0.0.1 sends its domain)."""

from __future__ import annotations

import ipaddress
import re

HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")


def parse(header: str) -> tuple[str, int | None] | None:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); None for anything else."""
    match = HOST.fullmatch(header)
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        return None
    return (match["v6"] or match["name"]).lower(), port


def is_loopback(header: str) -> bool:
    """``localhost`` or a loopback address, with or without a port; nothing else."""
    parsed = parse(header)
    if parsed is None:
        return False
    host = parsed[0].removesuffix(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
