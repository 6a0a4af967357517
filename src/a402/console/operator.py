"""The console of a service that has the operator API (:mod:`a402.observe`).

The console shows what ``GET /operator/payments`` answers, read through the same
function, and signs an operator in with the same token, checked by the observer itself
(constant time): it adds a view, not a second way in. A service without an operator
token has no console (:class:`ValueError`, which the commands turn into a clear error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from a402.console.app import Console, TokenCheck
from a402.console.app import Reader as PageReader
from a402.console.page import ConsoleData, Table
from a402.observe import Lister, Observer, OperatorRoutes, PaymentFilter

Tables = Callable[[], Awaitable[Sequence[Table]]]

#: The newest payments the page lists and charts (the operator API pages through more).
SHOWN = 500

NO_TOKEN = ("the console needs the operator token (--operator-token, 16+ characters): "
            "it shows what the operator API does, to the same people")


def operator_check(observer: Observer) -> TokenCheck:
    """The observer's own token check (ValueError if it has no token)."""
    if not observer.operator_enabled:
        raise ValueError(NO_TOKEN)
    return lambda given: observer.refusal(f"Bearer {given}") is None


def operator_reader(list_payments: Lister, tables: Tables | None = None) -> PageReader:
    """The page's data: the newest :data:`SHOWN` payments, and the service's tables."""

    async def read() -> ConsoleData:
        payments = await list_payments(PaymentFilter(limit=SHOWN))
        extra = list(await tables()) if tables is not None else []
        return ConsoleData(payments=payments[:SHOWN], tables=extra)

    return read


def with_console(routes: OperatorRoutes, *, tables: Tables | None = None) -> Console:
    """``routes`` (a service with its operator API in front) with the console in front."""
    if routes.list_payments is None:
        raise ValueError("the console reads the service's payment records: this one keeps none")
    return Console(routes, service=routes.observer.service,
                   check_token=operator_check(routes.observer),
                   read=operator_reader(routes.list_payments, tables))
