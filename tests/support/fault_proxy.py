"""A TCP proxy between Redis clients and a redis-server that makes faults the way a network does.

It can lose the reply of a chosen command (the server runs it; the client sees its connection reset and sends it
again), delay every chunk, reset every connection, or blackhole them (bytes dropped both ways, sockets left open:
no RST, no FIN, as a partition looks to both ends). It reads the clients' commands (RESP arrays) to know which
one to lose; replies are passed through unread. It can also count the chosen commands sent and not yet answered,
over all connections: how many a client really has in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

Command = list[bytes]
Predicate = Callable[[Command], bool]


def parse_commands(buffer: bytearray) -> list[Command]:
    """Take every complete RESP command off the front of `buffer` (it keeps what is incomplete)."""
    commands: list[Command] = []
    while True:
        parsed = _parse_one(buffer)
        if parsed is None:
            return commands
        command, used = parsed
        del buffer[:used]
        commands.append(command)


def _parse_one(buffer: bytearray) -> tuple[Command, int] | None:
    if not buffer:
        return None
    if buffer[:1] != b"*":
        # An inline command (redis-cli style): one line.
        end = buffer.find(b"\r\n")
        return None if end < 0 else (bytes(buffer[:end]).split(), end + 2)
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count = int(buffer[1:end])
    at = end + 2
    args: Command = []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0 or buffer[at : at + 1] != b"$":
            return None
        size = int(buffer[at + 1 : end])
        start = end + 2
        if len(buffer) < start + size + 2:
            return None
        args.append(bytes(buffer[start : start + size]))
        at = start + size + 2
    return args, at


@dataclass
class _Rule:
    matches: Predicate
    times: int


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    losing: bool = False
    # Counted commands sent on this link whose reply has not begun to come back.
    awaiting: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Listens on a loopback port and forwards to `target`; faults are switched on and off while it runs."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.blackholed = False
        self.lost: list[Command] = []
        self.seen: list[Command] = []
        self._rules: list[_Rule] = []
        self._counted: Predicate | None = None
        self._in_flight = 0
        self.max_in_flight = 0
        self.connections = 0  # accepted from clients, ever
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def lose_reply(self, matches: Predicate, times: int = 1) -> None:
        """The next `times` commands that match run on the server, but their replies never reach the client."""
        self._rules.append(_Rule(matches, times))

    def count_in_flight(self, matches: Predicate) -> None:
        """From now on, keep in `max_in_flight` the most matching commands awaiting their replies at once. A
        connection carries one command at a time here (redis-py's), so its next reply chunk answers it."""
        self._counted = matches

    def blackhole(self) -> None:
        """Drop every byte both ways from now on, leaving the sockets open (new connections hang too)."""
        self.blackholed = True

    def heal(self) -> None:
        """Forward again. Bytes dropped meanwhile stay lost, as after a partition that outlived TCP's patience."""
        self.blackholed = False

    def reset(self) -> None:
        """Reset every connection now (RST to the client)."""
        for link in list(self._links):
            self._abort(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort_writer(writer)
            return
        self.connections += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._client_to_server(link, reader)),
            asyncio.create_task(self._server_to_client(link, up_reader)),
        ]
        await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        self._abort(link)

    async def _client_to_server(self, link: _Link, reader: asyncio.StreamReader) -> None:
        pending = bytearray()
        while chunk := await reader.read(65536):
            if self.blackholed:
                continue
            pending += chunk
            commands = parse_commands(pending)
            self.seen.extend(commands)
            if any(self._take_rule(c) for c in commands):
                link.losing = True
            if self._counted is not None:
                sent = sum(1 for c in commands if self._counted(c))
                link.awaiting += sent
                self._in_flight += sent
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            link.server.write(chunk)
            await link.server.drain()

    async def _server_to_client(self, link: _Link, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            if self.blackholed:
                continue
            if link.losing:
                # The server has run the command: let it finish what was pipelined with it, then cut the client off.
                await asyncio.sleep(0.05)
                return
            self._answered(link)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            link.client.write(chunk)
            await link.client.drain()

    def _answered(self, link: _Link) -> None:
        self._in_flight -= link.awaiting
        link.awaiting = 0

    def _take_rule(self, command: Command) -> bool:
        for rule in self._rules:
            if rule.times > 0 and rule.matches(command):
                rule.times -= 1
                self.lost.append(command)
                return True
        return False

    def _abort(self, link: _Link) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        self._answered(link)
        for task in link.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        _abort_writer(link.client)
        with contextlib.suppress(OSError):
            link.server.close()


def _abort_writer(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer sees a reset (as when a middlebox or a crashed host drops it)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()


def evalsha_of(sha: str) -> Predicate:
    """Matches an EVALSHA of the script whose SHA1 is `sha`."""
    wanted = sha.encode()

    def matches(command: Command) -> bool:
        return len(command) > 1 and command[0].upper() == b"EVALSHA" and command[1] == wanted

    return matches
