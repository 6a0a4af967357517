"""Loud, once-per-process warnings for insecure modes (the simulated enclave).

Printed to stderr, where an operator sees them even without logging
configured, and also sent to the ``a402.tee`` logger for log collectors.
"""

from __future__ import annotations

import logging
import sys
import threading

_logger = logging.getLogger("a402.tee")
_lock = threading.Lock()
_emitted: set[str] = set()


def warn_once(key: str, message: str) -> bool:
    """Emit ``message`` the first time ``key`` is seen in this process; True if emitted."""
    with _lock:
        if key in _emitted:
            return False
        _emitted.add(key)
    banner = "!" * 78
    print(f"{banner}\n{message}\n{banner}", file=sys.stderr, flush=True)
    if _logger.hasHandlers():  # without handlers, logging would print it to stderr again
        _logger.warning(message)
    return True


def reset_for_tests() -> None:
    """Forget which warnings were emitted, so a test can observe one again."""
    with _lock:
        _emitted.clear()
