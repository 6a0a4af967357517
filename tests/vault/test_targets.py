"""The vault fetches public targets only, unless private ones are allowed (development)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from a402.vault import targets
from a402.vault.targets import TargetCheck, TargetRefused, TargetUnresolved, check_target

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/weather",  # loopback
    "http://localhost/admin",  # a name that resolves to loopback
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://10.0.0.7/internal",  # private network
    "http://[::1]:8080/",  # IPv6 loopback
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://0.0.0.0:80/",  # "this host"
])
async def test_private_and_local_targets_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        await check_target(url, allow_private=False)
    await check_target(url, allow_private=True)  # a development vault fetches them


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///path",
                                 "not a url"])
async def test_what_is_not_an_http_url_is_refused_even_in_development(url: str) -> None:
    with pytest.raises(TargetRefused):
        await check_target(url, allow_private=True)


async def test_a_public_address_is_fetched_and_an_unknown_name_is_a_retryable_failure() -> None:
    await check_target("https://1.1.1.1/dns-query", allow_private=False)
    with pytest.raises(TargetUnresolved):
        await check_target("http://no-such-host.invalid/", allow_private=False)


async def test_a_public_hosts_verdict_is_remembered_briefly_and_a_refusal_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups: list[str] = []

    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        lookups.append(host)
        address = "93.184.216.34" if host == "paid.example" else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    now = [1000.0]
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    monkeypatch.setattr(targets.time, "monotonic", lambda: now[0])
    check = TargetCheck(allow_private=False, ttl=60)
    await check("https://paid.example/weather")
    await check("https://paid.example/other")  # the same host and port: remembered
    for _ in range(2):  # a refusal is looked up again every time
        with pytest.raises(TargetRefused):
            await check("http://internal.example/")
    assert lookups == ["paid.example", "internal.example", "internal.example"]
    now[0] += 61
    await check("https://paid.example/weather")  # a minute later: looked up again
    assert lookups.count("paid.example") == 2


async def test_a_url_with_a_port_that_is_not_one_is_refused_as_a_target() -> None:
    with pytest.raises(TargetRefused, match="no valid port"):
        await check_target("http://127.0.0.1:99999/paid", allow_private=True)
    with pytest.raises(TargetRefused, match="no valid port"):
        await check_target("http://paid.example:port/", allow_private=False)
    for allow_private in (True, False):  # and so does the vault's check, that callers use
        with pytest.raises(TargetRefused, match="no valid port"):
            await TargetCheck(allow_private=allow_private)("http://paid.example:port/")
