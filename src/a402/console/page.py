"""The console's HTML, rendered on the server.

Safety: every value that reaches the page, whatever its type, goes through
:func:`html.escape` (quotes included) in :func:`cell`, and only there; the markup around
values is fixed text. A payer string is attacker-controlled (it is whatever a request
claimed), so it is shown as text and can never become an element, an attribute or a
script. The page itself holds no script: the one script is a separate file served by the
console, which a ``script-src 'self'`` policy allows.
"""

from __future__ import annotations

import time as clock
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from a402.console.charts import svg, volume_and_latency


@dataclass(frozen=True)
class Table:
    """A further section of the page: a title, column names and rows of plain values."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    note: str = ""


@dataclass(frozen=True)
class ConsoleData:
    """What a service shows: its payments (the operator API's record shape, newest
    first) and any further tables."""

    payments: Sequence[Mapping[str, Any]]
    tables: Sequence[Table] = field(default_factory=tuple)
    note: str = ""
    show_payments: bool = True
    """False for a service that has no payments of its own (the indexer: its agents and
    their reputation are its tables): no payment charts or table then."""


PAYMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "time (UTC)"), ("payer", "payer"), ("payee", "payee"),
    ("amount", "amount (atomic units)"), ("scheme", "scheme"), ("status", "status"),
    ("transaction", "transaction"), ("latencyMs", "latency (ms)"),
)


def cell(value: Any) -> str:
    """A value as text in HTML: None is a dash, anything else its ``str``, escaped."""
    return "–" if value is None or value == "" else escape(str(value), quote=True)


def when(t: Any) -> str:
    if not isinstance(t, int | float):
        return cell(t)
    return clock.strftime("%Y-%m-%d %H:%M:%S", clock.gmtime(t))


def payments_table(payments: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{escape(label)}</th>" for _, label in PAYMENT_COLUMNS)
    rows = []
    for record in payments:
        cells = "".join(
            f'<td class="{key}">{when(record.get(key)) if key == "time" else cell(record.get(key))}'
            "</td>" for key, _ in PAYMENT_COLUMNS)
        rows.append(f'<tr class="payment">{cells}</tr>')
    body = "".join(rows) or (f'<tr><td colspan="{len(PAYMENT_COLUMNS)}">'
                             "no payments yet</td></tr>")
    return (f'<table id="payments"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def table(section: Table) -> str:
    head = "".join(f"<th>{cell(name)}</th>" for name in section.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in section.rows)
    body = body or f'<tr><td colspan="{max(1, len(section.columns))}">none</td></tr>'
    note = f'<p class="note">{cell(section.note)}</p>' if section.note else ""
    return (f"<section><h2>{cell(section.title)}</h2>{note}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def live(service: str, data: ConsoleData, *, now: float | None = None) -> str:
    """The part of the page that the script refreshes: charts and tables."""
    note = f'<p class="note">{cell(data.note)}</p>' if data.note else ""
    refreshed = when(clock.time() if now is None else now)
    if not data.show_payments:
        return (f'<p class="summary">{cell(service)}: refreshed {refreshed} UTC</p>{note}'
                + "".join(table(t) for t in data.tables))
    volume, latency = volume_and_latency(data.payments, now=now)
    paid = len(data.payments)
    return (
        f'<p class="summary">{cell(service)}: {paid} payment record(s) shown; refreshed '
        f"{refreshed} UTC</p>{note}"
        '<section class="charts"><h2>Volume and latency</h2>'
        + svg(volume, title="volume paid per interval (settled, confirmed or paid only)",
              unit="atomic", kind="bars")
        + svg(latency, title="mean latency per interval", unit="ms", kind="points")
        + "</section><section><h2>Payments</h2>" + payments_table(data.payments)
        + "</section>" + "".join(table(t) for t in data.tables)
    )


def document(title: str, body: str, prefix: str, *, script: bool) -> str:
    js = f'<script src="{escape(prefix)}/console.js" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{cell(title)}</title>"
        f'<link rel="stylesheet" href="{escape(prefix)}/console.css">{js}</head>'
        f"<body>{body}</body></html>"
    )


def console_page(service: str, data: ConsoleData, prefix: str) -> str:
    header = (f"<header><h1>a402 {cell(service)} console</h1>"
              f'<form method="post" action="{escape(prefix)}/logout">'
              '<button type="submit">sign out</button></form></header>')
    main = (f'<main id="live" data-panel="{escape(prefix)}/panel">'
            f"{live(service, data)}</main>")
    return document(f"a402 {service} console", header + main, prefix, script=True)


def panel_page(service: str, data: ConsoleData, prefix: str) -> str:
    return document(f"a402 {service} console", f'<main id="live">{live(service, data)}</main>',
                    prefix, script=False)


def login_page(service: str, prefix: str, *, error: str = "") -> str:
    message = f'<p class="error" role="alert">{cell(error)}</p>' if error else ""
    body = (f"<main><h1>a402 {cell(service)} console</h1>{message}"
            f'<form method="post" action="{escape(prefix)}/login">'
            '<label for="token">operator token</label> '
            '<input id="token" name="token" type="password" autocomplete="off" required> '
            '<button id="sign-in" type="submit">sign in</button></form>'
            '<p class="note">The console only reads. The token is the one given to the '
            "service with --operator-token.</p></main>")
    return document(f"a402 {service} console: sign in", body, prefix, script=False)
