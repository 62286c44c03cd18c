"""The tests' real redis-server: the engine's public testing helper, under the name the tests import."""

from slack_backend.queue.testing import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
