"""``a402 gateway``'s flags, generated from typed groups (:mod:`a402.provider.command`,
:mod:`a402.provider.settings`): each flag's default is its group's, the command lines of
the README and the tests parse to what they meant before the flags were generated, and
the A402-only flags are still refused without ``--a402``. Also the middleware's settings:
a group, or its fields one by one."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

import pytest

from a402.chain.deploy import TokenInfo
from a402.cli import build_parser
from a402.provider import PaymentMiddleware
from a402.provider.command import (
    A402_GROUPS,
    FLAG_GROUPS,
    A402Options,
    AttestationOptions,
    ServeOptions,
    TokenOptions,
    UpstreamOptions,
    a402_only_flags_given,
)
from a402.provider.settings import (
    ChannelTimeouts,
    PaymentSettings,
    PaymentTiming,
    Paywall,
)
from a402.settings import from_args

REQUIRED = ["--upstream", "http://127.0.0.1:8000", "--route", "GET /api/*=0.001",
            "--facilitator", "http://127.0.0.1:4021"]
USDC = TokenInfo("0x" + "11" * 20, "USD Coin", "USDC", "2", 6)


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["gateway", *argv])


def test_every_gateway_setting_has_a_flag_whose_default_is_the_groups() -> None:
    args = _parse(*REQUIRED)
    for _, group in FLAG_GROUPS:
        if group is UpstreamOptions:  # its flags are required
            continue
        assert from_args(group, args) == group()
        assert all(getattr(args, f.name) == getattr(group(), f.name)
                   or (getattr(args, f.name) == [] and getattr(group(), f.name) == ())
                   for f in fields(group))


def test_the_defaults_are_todays() -> None:
    """What the hand-written flags defaulted to (``--ack-timeout``/``--lock-timeout``:
    none, meaning A402Config's 30 and 20; ``--trust-root``/``--vault-measurement``: none,
    meaning no value)."""
    args = _parse(*REQUIRED)
    assert from_args(TokenOptions, args) == TokenOptions(
        manifest=None, pay_to=None, network=None, asset=None, asset_name="USD Coin",
        asset_version="2", decimals=6)
    assert from_args(ServeOptions, args) == ServeOptions(
        ledger_db="sqlite:///.a402/{chain_id}/gateway-ledger.db", host="127.0.0.1", port=4402)
    assert from_args(Paywall, args) == Paywall(settle_before_serve=False, public_url=None)
    assert from_args(A402Options, args) == A402Options(
        a402=False, rpc=None, operator_key_file=None, manager=None,
        channel_db="sqlite:///.a402/{chain_id}/provider-channels.db")
    assert from_args(AttestationOptions, args) == AttestationOptions(
        platform_file=".a402/provider-platform.json",
        identity_file=".a402/provider-identity.bin", measurement=None,
        allow_simulated_attestation=False, trust_root=(), nitro_root=None,
        vault_measurement=())
    assert from_args(ChannelTimeouts, args) == ChannelTimeouts(ack_timeout=30.0,
                                                               lock_timeout=20.0)


def test_the_readme_and_test_command_lines_parse_to_the_same_values() -> None:
    exact = _parse(*REQUIRED, "--manifest", ".a402/devnet.json", "--port", "4402",
                   "--ledger-db", "sqlite:///l.db")
    assert from_args(UpstreamOptions, exact) == UpstreamOptions(
        upstream="http://127.0.0.1:8000", route=("GET /api/*=0.001",),
        facilitator="http://127.0.0.1:4021")
    assert exact.manifest == ".a402/devnet.json" and exact.ledger_db == "sqlite:///l.db"
    assert exact.port == 4402 and not exact.a402

    every = _parse(
        *REQUIRED, "--route", "POST /b/*=0.5", "--pay-to", "0x" + "22" * 20,
        "--network", "eip155:84532", "--asset", "0x" + "11" * 20, "--asset-name", "USDC",
        "--asset-version", "1", "--decimals", "18", "--settle-before-serve",
        "--public-url", "https://api.example", "--host", "0.0.0.0", "--port", "1234",
        "--a402", "--rpc", "http://127.0.0.1:8545", "--operator-key-file", "p.key",
        "--manager", "0x" + "42" * 20, "--channel-db", "sqlite:///c.db",
        "--platform-file", "platform.json", "--identity-file", "identity.bin",
        "--measurement", "0xaa", "--allow-simulated-attestation", "--trust-root", "01",
        "--trust-root", "02", "--nitro-root", "root.pem", "--vault-measurement", "0xab",
        "--vault-measurement", "0xcd", "--ack-timeout", "12", "--lock-timeout", "7.5")
    assert every.route == ["GET /api/*=0.001", "POST /b/*=0.5"]
    assert from_args(TokenOptions, every) == TokenOptions(
        pay_to="0x" + "22" * 20, network="eip155:84532", asset="0x" + "11" * 20,
        asset_name="USDC", asset_version="1", decimals=18)
    assert from_args(ServeOptions, every) == ServeOptions(host="0.0.0.0", port=1234)
    assert from_args(Paywall, every) == Paywall(settle_before_serve=True,
                                                public_url="https://api.example")
    assert from_args(A402Options, every) == A402Options(
        a402=True, rpc="http://127.0.0.1:8545", operator_key_file="p.key",
        manager="0x" + "42" * 20, channel_db="sqlite:///c.db")
    assert from_args(AttestationOptions, every) == AttestationOptions(
        platform_file="platform.json", identity_file="identity.bin", measurement="0xaa",
        allow_simulated_attestation=True, trust_root=("01", "02"), nitro_root="root.pem",
        vault_measurement=("0xab", "0xcd"))
    assert from_args(ChannelTimeouts, every) == ChannelTimeouts(ack_timeout=12.0,
                                                                lock_timeout=7.5)


@pytest.mark.parametrize("missing", ["--upstream", "--facilitator"])
def test_upstream_and_facilitator_are_required(missing: str) -> None:
    argv = list(REQUIRED)
    del argv[argv.index(missing):argv.index(missing) + 2]
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_a_metered_route_may_stand_in_for_a_priced_one() -> None:
    """``--route`` or ``--meter``: the command refuses neither given (``no_routes``)."""
    argv = list(REQUIRED)
    del argv[argv.index("--route"):argv.index("--route") + 2]
    parsed = _parse(*argv, "--meter", "GET /api/*=per-byte:0.000001,max=0.01")
    assert (parsed.route, parsed.meter) == ([], ["GET /api/*=per-byte:0.000001,max=0.01"])


def test_a402_only_flags_are_named_in_help_order_unless_at_their_default() -> None:
    assert a402_only_flags_given(_parse(*REQUIRED)) == []
    assert a402_only_flags_given(_parse(*REQUIRED, "--a402")) == []
    given = _parse(*REQUIRED, "--vault-measurement", "0xab", "--allow-simulated-attestation",
                   "--identity-file", "i.bin", "--platform-file", "p.json",
                   "--lock-timeout", "5", "--rpc", "http://r")
    assert a402_only_flags_given(given) == [
        "--rpc", "--platform-file", "--identity-file", "--allow-simulated-attestation",
        "--vault-measurement", "--lock-timeout"]
    assert {group for _, group in FLAG_GROUPS} >= set(A402_GROUPS)


def test_help_lists_the_flags_group_by_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--help")
    text = capsys.readouterr().out
    titles = [title for title, _ in FLAG_GROUPS]
    assert all(f"\n{title}:\n" in text for title in titles)
    assert [text.index(f"\n{title}:\n") for title in titles] == sorted(
        text.index(f"\n{title}:\n") for title in titles)
    assert "--ack-timeout SECONDS" in text and "(default: 30.0)" in text


# ------------------------------------------------------------- the middleware's settings


def _middleware(**options: Any) -> PaymentMiddleware:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    return PaymentMiddleware(app, routes={"GET /x": 1}, pay_to="0x" + "22" * 20, token=USDC,
                             network="eip155:84532", facilitator="http://127.0.0.1:9",
                             **options)


def test_the_middleware_takes_its_settings_as_groups_or_one_by_one() -> None:
    default = _middleware()
    assert (default.paywall, default.timing) == (Paywall(), PaymentTiming())
    assert default.settle_before_serve is False and default.public_url is None
    assert default.max_timeout_seconds == 60 and default.retry_after == 2
    assert default.retention == 600

    grouped = _middleware(paywall=Paywall(settle_before_serve=True, public_url="https://a/"),
                          timing=PaymentTiming(max_timeout_seconds=5))
    one_by_one = _middleware(settle_before_serve=True, public_url="https://a/",
                             max_timeout_seconds=5)
    for middleware in (grouped, one_by_one):
        assert middleware.paywall == Paywall(settle_before_serve=True, public_url="https://a/")
        assert middleware.timing == PaymentTiming(max_timeout_seconds=5)
        assert middleware.settle_before_serve and middleware.public_url == "https://a"
        assert middleware.max_timeout_seconds == 5

    mixed = _middleware(timing=PaymentTiming(retry_after_seconds=7), max_timeout_seconds=9)
    assert mixed.timing == PaymentTiming(retry_after_seconds=7, max_timeout_seconds=9)


def test_the_one_by_one_names_are_the_groups_fields() -> None:
    assert set(PaymentSettings.__annotations__) == {
        f.name for group in (Paywall, PaymentTiming) for f in fields(group)}
    with pytest.raises(TypeError, match="no such payment setting: settle_first"):
        _middleware(settle_first=True)
    with pytest.raises(ValueError, match="max_timeout_seconds"):
        _middleware(max_timeout_seconds=0)
