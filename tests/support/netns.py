"""A network namespace joined to the host by a veth pair, for partitions made the way a network makes them.

Needs root and iproute2 (`ip netns`). The link is a private /30: the host side holds `.1`, the namespace `.2`.
Cutting it sets the host end down: the namespace's packets are dropped (no carrier) and the host loses its route
to it, so neither side gets a reset; both see silence, as across a real partition.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _ip_binary() -> str | None:
    # iproute2 lives in /usr/sbin, which a non-login PATH may lack.
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_ip_binary() or "ip", *args], check=check, capture_output=True, text=True, timeout=10)


def netns_unavailable() -> str | None:
    """Why a namespace cannot be made here (not root, no iproute2, refused by the kernel), or None when it can."""
    if _ip_binary() is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "not running as root"
    probe = f"sbprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class VethLink:
    """A namespace `name` whose interface `ns_if` (`ns_addr`) reaches the host's `host_if` (`host_addr`)."""

    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    def exec_prefix(self) -> list[str]:
        """Prepend to a command line to run it inside the namespace (`ip netns exec` execs it: same pid)."""
        return [_ip_binary() or "ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Take the host end down: packets stop both ways, no RST, no FIN."""
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        """Bring the host end up again; the kernel puts the /30 route back with the link."""
        _ip("link", "set", self.host_if, "up")


@contextmanager
def veth_namespace() -> Iterator[VethLink]:
    """Make a namespace and its veth pair on a random private /30; remove both afterwards, even on failure."""
    tag = uuid.uuid4().hex[:6]
    third, fourth = random.randint(0, 255), random.randrange(0, 256, 4)
    link = VethLink(
        name=f"sbpart{tag}",
        host_if=f"sbh{tag}",
        ns_if=f"sbn{tag}",
        host_addr=f"10.213.{third}.{fourth + 1}",
        ns_addr=f"10.213.{third}.{fourth + 2}",
    )
    try:
        _ip("netns", "add", link.name)
        _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
        _ip("link", "set", link.ns_if, "netns", link.name)
        _ip("addr", "add", f"{link.host_addr}/30", "dev", link.host_if)
        _ip("link", "set", link.host_if, "up")
        inside = ["netns", "exec", link.name, "ip"]
        _ip(*inside, "addr", "add", f"{link.ns_addr}/30", "dev", link.ns_if)
        _ip(*inside, "link", "set", link.ns_if, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield link
    finally:
        # Deleting one end of a veth pair deletes both; deleting the namespace would too, but do both anyway.
        _ip("link", "del", link.host_if, check=False)
        _ip("netns", "del", link.name, check=False)
