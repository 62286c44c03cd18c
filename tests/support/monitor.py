"""What Redis runs for its clients while a block runs, seen through MONITOR: round trips counted where Redis sees
them, not where our code thinks it sent them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis

from tests.support.engine import wait_until


@dataclass
class Seen:
    """Commands Redis ran for clients (not inside scripts), with this process's monotonic time on arrival."""

    commands: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    def of(self, name: str, key_part: str) -> list[tuple[float, tuple[str, ...]]]:
        return [(at, c) for at, c in self.commands if c[0].upper() == name and len(c) > 1 and key_part in c[1]]


@asynccontextmanager
async def monitored(redis: Redis) -> AsyncIterator[Seen]:
    """What Redis runs while the block runs, read through MONITOR, every line of it in when the block ends."""
    seen = Seen()
    async with redis.monitor() as monitor:

        async def read() -> None:
            while True:
                info = await monitor.next_command()
                if info["client_type"] != "lua":
                    seen.commands.append((time.monotonic(), tuple(str(info["command"]).split())))

        reader = asyncio.create_task(read())
        try:
            yield seen
            # Redis feeds MONITOR in the order it runs commands: once this ECHO's line is in, every earlier one is.
            marker = f"monitored-until-{time.monotonic_ns()}"
            await redis.echo(marker)

            async def caught_up() -> bool:
                return any(marker in part for _, command in seen.commands for part in command)

            await wait_until(caught_up, timeout_s=5)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
