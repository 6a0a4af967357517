"""a402: agents paying for services over HTTP, x402-compatible, with payments bound to execution."""

__version__ = "0.1.0"
