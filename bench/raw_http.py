"""A minimal keep-alive HTTP/1.1 client for load generation: requests built once as bytes, replies read by length.

The ingress benchmark measures the server, so the client must cost little next to it. httpx spent 1.6-4 ms of CPU
a request on a two-core host (more than the server's 1.3-1.8 ms), and what it spent was taken from the server it
measured. This client sends a request that was serialised before the clock started and reads a reply framed by
Content-Length, which is all a load generator against our own app needs. Anything else (chunked replies, a closed
connection mid-reply) is an error it names, not a case it handles.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping


class RawHttpError(Exception):
    """A reply this client cannot read, or a connection that closed under it."""


def build_request(host: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """One POST request, head and body, as the bytes that go on the wire."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawHttpConnection:
    """One keep-alive connection; `exchange` sends one prebuilt request and returns the status and body."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader = self._reader
        try:
            self._writer.write(request)
            status, length, keep_alive = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            body = await reader.readexactly(length)
        except RawHttpError:
            await self.close()  # what follows on the stream can no longer be framed
            raise
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            await self.close()
            raise RawHttpError(f"connection failed mid-exchange: {type(exc).__name__}") from exc
        if not keep_alive:
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server keeps the connection open, from a reply's head."""
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise RawHttpError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    length: int | None = None
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise RawHttpError(f"reply framed by Transfer-Encoding {value.strip()!r}, not Content-Length")
        elif name == b"connection":
            keep_alive = value.strip().lower() == b"keep-alive"
    if length is None:
        raise RawHttpError("reply without Content-Length")
    return int(parts[1]), length, keep_alive
