"""Where Redis is (one server, Sentinels naming a master, or Cluster nodes), as settings name it, without redis-py.

The settings check these addresses at every start; keeping them apart from the client (connection.py) means
reading the settings never loads a Redis client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLUSTER_SCHEME = "redis+cluster://"
CLUSTER_TLS_SCHEME = "rediss+cluster://"


def parse_hosts(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 as `[::1]:26379`) as pairs; raises ValueError naming the bad entry."""
    found: list[tuple[str, int]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{entry!r} is not host:port")
        found.append((host, int(port)))
    if not found:
        raise ValueError("lists no host:port")
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """Where Redis is: a URL for one server, Sentinels naming the master, or Cluster nodes.

    With `sentinels` or `cluster_nodes`, the URL still gives the password, user name, database and TLS of the
    data nodes (its host and port are not used); a `redis+cluster://host:port,host:port` URL names Cluster nodes
    by itself.
    """

    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_password: str | None = field(default=None, repr=False)
    cluster_nodes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.sentinels and (self.cluster_nodes or is_cluster_url(self.url)):
            raise ValueError("Sentinel and Cluster are exclusive: give sentinels or cluster nodes, not both")

    @property
    def kind(self) -> str:
        """`sentinel`, `cluster` or `single`."""
        if self.sentinels:
            return "sentinel"
        if self.cluster_nodes or is_cluster_url(self.url):
            return "cluster"
        return "single"


def is_cluster_url(url: str) -> bool:
    """True for a `redis+cluster://` or `rediss+cluster://` URL."""
    return url.startswith((CLUSTER_SCHEME, CLUSTER_TLS_SCHEME))


def cluster_url_nodes(url: str) -> tuple[tuple[str, int], ...]:
    """The nodes a `redis+cluster://[user:pass@]host:port,host:port` URL names."""
    netloc = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    return parse_hosts(netloc)
