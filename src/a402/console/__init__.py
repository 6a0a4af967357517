"""The operator console: a read-only page in the browser, served by a service itself.

:class:`Console` wraps a service's ASGI app and answers ``/console`` (and nothing else)
ahead of it. What it shows comes from one callable, :data:`Reader`, that the service
supplies: its payments in the common record shape of the operator API, and any further
tables (channels and their states, balances, settlements and their transactions).
Nothing on the page is fetched from another origin; see :mod:`a402.console.app` for the
safety argument (token, cookie, CSP, escaping).
"""

from a402.console.app import Console, token_check
from a402.console.page import ConsoleData, Table

__all__ = ["Console", "ConsoleData", "Table", "token_check"]
