"""Real HTTP servers for tests: the package's own background server, under a short name."""

from a402.background import serve_in_thread as serve

__all__ = ["serve"]
