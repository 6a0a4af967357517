"""Which URLs the vault fetches for its clients: public ones, unless told otherwise.

The vault sends HTTP requests to addresses its clients choose: the paid URL,
and the A402 endpoint that the provider's 402 names. Left open, anyone with an
account could make the vault reach what only the vault's own network reaches
— a cloud metadata service, an admin port on localhost, a database on the
private network (server-side request forgery). So by default every address a
target's host resolves to must be globally routable; a development setup with
every party on one machine allows private targets explicitly
(``Connections.allow_private_targets``, ``a402 vault --allow-private-targets``).

Limit: the check runs when the call arrives. A name that resolves to a public
address now and to a private one a moment later (DNS rebinding) is not caught.
:class:`TargetCheck` remembers a host's public verdict for a short while
(``ttl``), so that a paid request does not wait for two DNS lookups: the limit
is the same, over a window of that length.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from a402.memo import memo_short


class TargetRefused(Exception):
    """The URL is not one the vault fetches (``reason``: ``target_not_allowed``)."""


class TargetUnresolved(Exception):
    """The URL's host does not resolve now (maybe later: retryable)."""


@memo_short(4096)
def url_parts(url: str) -> tuple[str, str | None, int | None]:
    """``url``'s scheme, host (lower case) and port, as :func:`~urllib.parse.urlsplit` reads
    them: ``ValueError`` for a port that is not one.

    Kept for the last URLs seen (a pure function of the string): a paid call's URL and
    its provider's endpoint are checked several times per call, and the same ones call
    after call, and ``SplitResult.hostname``/``.port`` parse the netloc again at each read.
    """
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


async def check_target(url: str, *, allow_private: bool) -> None:
    """Raise :class:`TargetRefused` unless the vault may fetch ``url``."""
    try:
        scheme, host, port = url_parts(url)
    except ValueError:  # a port that is not one
        raise TargetRefused(f"{url!r} has no valid port") from None
    if scheme not in ("http", "https") or not host:
        raise TargetRefused(f"{url!r} is not an http(s) URL with a host")
    if allow_private:
        return
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = port or (443 if scheme == "https" else 80)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise TargetUnresolved(f"{host}: {e}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]
    private = [a for a in addresses if not a.is_global]
    if private or not addresses:
        raise TargetRefused(f"{host} is not a public address ({private[0] if private else 'none'}"
                            "); this vault fetches public targets only")


class TargetCheck:
    """:func:`check_target` with each public host's verdict kept for ``ttl`` seconds.

    Only a host found public is remembered (refusals and failed lookups are
    checked again on the next call), and at most ``size`` of them.
    """

    def __init__(self, *, allow_private: bool, ttl: float = 30.0, size: int = 4096) -> None:
        self.allow_private = allow_private
        self.ttl = ttl
        self.size = size
        self._public: dict[tuple[str, int | None], float] = {}

    async def __call__(self, url: str) -> None:
        try:
            scheme, host, port = url_parts(url)
        except ValueError:  # a port that is not one: check_target says so
            await check_target(url, allow_private=self.allow_private)
            raise
        key = (host or "", port)
        now = time.monotonic()
        if self._public.get(key, 0.0) > now and scheme in ("http", "https"):
            return
        await check_target(url, allow_private=self.allow_private)
        if not self.allow_private:
            if len(self._public) >= self.size:
                self._public.clear()
            self._public[key] = now + self.ttl

