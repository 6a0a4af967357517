"""Expected failures of ``a402`` commands: a reason code and one line, never a traceback.

A command that cannot do its job for a reason the user can fix (a wrong path, a node
that does not answer, a port already taken, contracts not deployed yet) raises
:class:`CommandFailed`, or lets one of the library errors listed in :data:`_EXPECTED`
escape; :func:`a402.cli.main` turns either into ``a402 COMMAND: <state> (<reason>):
<message>`` on stderr and exit code 2. Anything else is a bug and keeps its traceback.

The line says first what happened to the user's money. For a service that did not start
(``facilitator``, ``gateway``, ``vault``, ``indexer``, ``devnet``) that is "not started,
nothing was paid": a service pays nothing before it serves. For any other command the
failure is reported as "failed" without a claim about money, unless the command raised
:class:`CommandFailed` with ``nothing_paid=True``, which it does only where it failed
before sending anything.

This module imports nothing heavy: the library error classes are looked up in
``sys.modules`` only (an error of a module never imported cannot have been raised), so
``a402 --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from a402.chain.deploy import Manifest
    from a402.chain.node import Chain

#: Commands that run a service: a failure to start has moved no money.
SERVICES: Final = frozenset({"facilitator", "gateway", "vault", "indexer", "devnet"})

#: Exit code of an expected failure (the same as argparse's usage errors).
EXIT_FAILED: Final = 2


class CommandFailed(Exception):
    """An expected failure: ``reason`` is machine-readable, ``message`` says what to do."""

    def __init__(self, reason: str, message: str, *, nothing_paid: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.nothing_paid = nothing_paid


# (module, class, reason): library errors that mean "the user can fix this".
_EXPECTED: Final = (
    ("a402.keys", "KeyFileError", "key_file_unreadable"),
    ("a402.chain.locate", "ChainUnreachable", "chain_unavailable"),
    ("a402.chain.locate", "ChainNotFound", "chain_not_found"),
    ("a402.chain.rpc", "ChainUnavailable", "chain_unavailable"),
    # web3's HTTPProvider is the one user of requests here: its connection errors are a
    # node that does not answer.
    ("requests.exceptions", "ConnectionError", "chain_unavailable"),
    ("requests.exceptions", "Timeout", "chain_unavailable"),
)


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    message: str
    nothing_paid: bool

    def line(self, command: str) -> str:
        """The one line printed for ``a402 command``: the money state first."""
        if command in SERVICES:
            state = "not started, nothing was paid"
        elif self.nothing_paid:
            state = "nothing was paid"
        else:
            state = "failed"
        return f"a402 {command}: {state} ({self.reason}): {self.message}"


#: Commands whose every action serves (``a402 mcp serve``): refused at the command line,
#: a paywall was not started either.
PAYWALLS: Final = frozenset({"mcp"})


def usage_state(command: str | None) -> str:
    """The money state of a command refused at its command line: it ran nothing."""
    if command is None:
        return "nothing was run"
    return ("not started, nothing was paid" if command in SERVICES | PAYWALLS
            else "nothing was paid")


class MoneyFirstParser(argparse.ArgumentParser):
    """An argument parser whose usage errors say the money state first, as every other
    failure of ``a402`` does: ``a402 gateway: not started, nothing was paid (usage):
    argument --port: invalid int value: 'abc'``, then the usage, exit 2. A command
    refused at its command line has run nothing, so nothing was paid (and a service was
    not started)."""

    #: The command the command line names, when this is the top ``a402`` parser (its
    #: "unrecognized arguments" are that command's).
    command: str | None = None
    #: The state to say instead of the command's (e.g. a vault-mode action, which is no
    #: service start).
    state: str | None = None

    def error(self, message: str) -> Any:
        words = self.prog.split()
        command = words[1] if len(words) > 1 else self.command
        prog = self.prog if len(words) > 1 or command is None else f"{self.prog} {command}"
        state = self.state or usage_state(command)
        self.exit(EXIT_FAILED, f"{prog}: {state} (usage): {message}\n{self.format_usage()}")


def expected_failure(error: BaseException) -> Failure | None:
    """The :class:`Failure` ``error`` stands for, or None if it is not an expected one."""
    if isinstance(error, CommandFailed):
        return Failure(error.reason, error.message, error.nothing_paid)
    for module, name, reason in _EXPECTED:
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and isinstance(error, kind):
            return Failure(reason, _text(error), False)
    # An error raised with a message and no file name (``find_anvil``'s "anvil not found:
    # run `npm ci` ...") says what to do in its message; "None: no such file" would not.
    if isinstance(error, FileNotFoundError):
        return Failure("file_not_found", _file_text(error, "no such file"), False)
    if isinstance(error, PermissionError):
        return Failure("file_unreadable", _file_text(error, "permission denied"), False)
    if isinstance(error, IsADirectoryError):
        return Failure("file_not_found", _file_text(error, "is a directory"), False)
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return Failure("port_in_use", str(error), False)
    return None


def _file_text(error: OSError, what: str) -> str:
    return f"{error.filename}: {what}" if error.filename is not None else _text(error)


def _text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def ensure_port_free(host: str, port: int) -> None:
    """Raise ``CommandFailed(port_in_use)`` if ``host:port`` cannot be bound now.

    Checked before a service prints that it is ready, so that a second service on a taken
    port says so instead of announcing itself and then failing. (A port taken in the
    instant between this check and the server's own bind still fails in the server.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise CommandFailed(
                    "port_in_use", f"{host}:{port} is already in use (another a402 service? "
                                   "stop it or choose another --port)") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise CommandFailed("address_unavailable",
                                    f"{host} is not an address of this machine") from None
            raise


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Does something accept connections on ``host:port``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_manifest(path: str) -> Manifest:
    """The devnet manifest at ``path``, or ``CommandFailed(manifest_not_found |
    manifest_invalid)`` saying how to get one."""
    from a402.chain.deploy import Manifest

    try:
        return Manifest.load(path)
    except FileNotFoundError:
        raise CommandFailed(
            "manifest_not_found", f"{path}: no such manifest; `a402 devnet` writes one "
                                  "(.a402/devnet.json), or give --manifest PATH") from None
    except OSError as e:
        raise CommandFailed("manifest_not_found", f"{path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CommandFailed("manifest_invalid", f"{path} is not an a402 manifest ({e})") from None


def reach_chain(chain: Chain) -> str:
    """The CAIP-2 network of ``chain``, read from its node now, or
    ``CommandFailed(chain_unavailable)`` naming the URL that did not answer."""
    from a402.chain.rpc import ChainUnavailable, node_errors

    try:
        with node_errors(f"reading the chain id from {chain.rpc_url}"):
            return chain.network
    except ChainUnavailable:
        raise CommandFailed(
            "chain_unavailable", f"the chain's JSON-RPC at {chain.rpc_url} does not answer "
                                 "(is the node running? is --rpc right?)") from None
