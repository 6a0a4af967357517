"""What the client tells its user about their money when a vault call fails, pinned against
the vault's own code.

A failed call's :attr:`VaultCallError.may_have_paid` decides what the user is told and
what the budget keeps: false, the reservation is released and the message says nothing
was paid; true, the reservation stays and the message says the call may have been paid
(retry with the same idempotency key). A 5xx is "may have been paid" unless its reason is
one of :data:`REFUSED_BEFORE_PAYING`, the vault's own refusals answered before any payment
of the call can have left it. A reason in that set that the vault also answers after σ_U
may have left would tell a user who paid that nothing was paid, and release the budget
that pays for it: the one mistake that loses money. A reason answered only before paying
but missing from the set only makes the client more careful than it needs to be.

So every 5xx answer the vault can give is found here in its source (its error classes,
its JSON answers, its recorded answers, its enclave's refusals with a 5xx status), and
each reason must be classified below: a new one fails this test until someone decides
which it is, and says why. The 4xx answers likewise (:data:`CLASSIFIED_4XX`): a 4xx is
"nothing was paid" unless its reason is one of :data:`MAY_BE_PAID`.
"""

from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import a402.vault
from a402.client.vault import MAY_BE_PAID, REFUSED_BEFORE_PAYING, VaultCallError
from a402.vault import channels as vault_channels
from a402.vault import mode as vault_mode
from a402.wire import vault_api as api

VAULT = Path(a402.vault.__file__).parent

BEFORE = "answered only before any payment of the call can have left the vault"
MAY_HAVE_PAID = "answered (somewhere) after a payment of the call may have left"

#: Every reason the vault answers with a 5xx status, with why it is what it is. The
#: payment leaves with σ_U (AUTH); after it, the vault's exchanges turn any failure into
#: ``202 payment_pending`` (standard mode: the tunnel's PaymentPending; vault mode:
#: ModeInvoker._exchange), so a 5xx after σ_U is a failure those paths do not catch.
CLASSIFIED: dict[str, tuple[str, str]] = {
    api.PROVIDER_REFUSED: (BEFORE, "the provider refused OPEN or EXEC (no σ_U); a refused "
                           "REVEAL in vault mode is answered 202 payment_pending"),
    api.PROVIDER_UNAVAILABLE: (BEFORE, "the target, the tunnel or the provider unreachable "
                               "before EXEC's REPLY; after σ_U it is payment_pending"),
    api.CHAIN_UNAVAILABLE: (BEFORE, "createASC or a deposit's read failed: no channel "
                            "opened, no σ_U; the exchanges read no chain after σ_U"),
    api.VAULT_STANDBY: (BEFORE, "a replica that is not the active one: the call never "
                        "reached the vault (a withheld answer is answer_dropped)"),
    api.ATTESTATION_FAILED: (BEFORE, "the provider's attestation failed: no tunnel"),
    api.OFFER_MISMATCH: (BEFORE, "the 402 disagrees with the attested provider: no tunnel"),
    api.NO_ACCEPTABLE_OFFER: (BEFORE, "the 402 names no payable a402 offer"),
    api.CHANNEL_RECOVERING: (BEFORE, "the enclave must restore channels first, or the "
                             "provider holds an earlier request: nothing signed"),
    api.CHANNEL_BUSY: (BEFORE, "another call holds the channel (409): nothing signed"),
    api.CONFLICT: (BEFORE, "the ledger was busy opening a channel: no approval left"),
    api.LOCK_RELEASED: (BEFORE, "the worker gave the call up from RELEASED (no σ_U), and "
                        "records it with outcome 'refused'"),
    "settlement_dead": (BEFORE, "an enclave refusal (vault mode): the enclave changed "
                        "nothing"),
    "chain_unsafe": (BEFORE, "the node has no finalized block to read deposits at"),
    "not_configured": (BEFORE, "an endpoint this vault does not serve: nothing was done"),
    api.PROTOCOL_VIOLATION: (MAY_HAVE_PAID, "a paid call whose result does not open "
                             "(after REVEAL: the provider was paid) is answered with it"),
    api.ANSWER_DROPPED: (MAY_HAVE_PAID, "a replica that lost its lease withheld the answer "
                         "of a call it ran, which may have paid"),
    "internal_error": (MAY_HAVE_PAID, "an unforeseen failure anywhere, e.g. the DELIVERED "
                       "checkpoint's write after the provider was paid"),
    "vault_broken": (MAY_HAVE_PAID, "the sealed ledger's write failed with its outcome "
                     "unknown: a stored σ_U cannot be ruled out"),
}

#: The 5xx answers whose status is computed rather than written: where, the expression,
#: and why none of them is a 5xx other than those this test reads from their tables.
COMPUTED_STATUS = {
    ("channels.py", "_REFUSALS.get(e.reason, 403)"): "the enclave's refusals: _REFUSALS",
    ("mode.py", "_STATUS_OF.get(e.reason, 400)"): "the enclave's refusals: _STATUS_OF",
    ("app.py", "e.status"): "a JSON body over its bounds: 400 or 413",
    ("mode_app.py", "e.status"): "a JSON body over its bounds: 400 or 413",
    ("answers.py", "error.status"): "a VaultError's own status, found at its raise site",
    ("answers.py", "status"): "Answers.record: the status its callers give, found there",
    ("worker.py", "status"): "a recorded answer's own status",
    ("app.py", "status"): "a handler's (status, body) or a routing error's (404, 405)",
    ("mode_app.py", "status"): "a handler's (status, body), found where it is made",
    ("call.py", "status"): "a recorded answer's own status, found where it is recorded",
    ("mode_operator.py", "e.status"): "a VaultModeError's own status, found at its raise site",
    ("mode_app.py", "200 if ok else 503"): "a health check (no error: not a call's answer)",
    ("mode_lease.py", "200 if ok else 503"): "a health check (no error: not a call's answer)",
}

_ERROR_CLASSES = frozenset({"VaultError", "VaultModeError", "ModeRefused"})


@dataclass(frozen=True)
class Answer:
    """One place in the vault's source that answers a call with a 5xx."""

    module: str
    line: int
    status: int
    reason: str | None  # None: not resolved from the source
    body: dict[str, Any]  # the body's literal keys (error, outcome) as the client sees them

    def __str__(self) -> str:
        return f"{self.module}:{self.line} {self.status} {self.reason}"


class _Scan(ast.NodeVisitor):
    """A module's 5xx answers, and the statuses it computes (to be explained)."""

    def __init__(self, name: str, tree: ast.Module, raised: dict[str, set[str]],
                 functions: dict[str, list[ast.AST]], statuses: range) -> None:
        self.name = name
        self.statuses = statuses  # the answers looked for: 5xx, or 4xx
        self.module = importlib.import_module(f"a402.vault.{name.removesuffix('.py')}")
        self.raised = raised  # reasons each exception class is raised with, package-wide
        self.functions = functions  # the package's functions, by name
        self.parents: dict[ast.AST, ast.AST] = {
            child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.answers: list[Answer] = []
        self.computed: set[str] = set()
        self.seen: set[int] = set()  # the 5xx constants that are part of an answer

    def visit_Call(self, node: ast.Call) -> None:
        name = (node.func.id if isinstance(node.func, ast.Name)
                else node.func.attr if isinstance(node.func, ast.Attribute) else "")
        keywords = {k.arg: k.value for k in node.keywords}
        if name in _ERROR_CLASSES and len(node.args) >= 2:
            self._answer(node.args[0], node.args[1], None)
        elif name == "JSONResponse" and node.args and "status_code" in keywords:
            self._answer(keywords["status_code"], None, node.args[0])
        elif name == "record" and len(node.args) >= 3:  # Answers.record(key, status, body)
            self._answer(node.args[1], None, node.args[2])
        self.generic_visit(node)

    def visit_Tuple(self, node: ast.Tuple) -> None:  # a handler's (status, body)
        if len(node.elts) == 2 and isinstance(node.elts[1], ast.Dict) \
                and self._value(node.elts[0]) is None:  # not a (SQL text, parameters) pair
            self._answer(node.elts[0], None, node.elts[1])
        self.generic_visit(node)

    def _answer(self, status: ast.expr, reason: ast.expr | None, body: ast.expr | None
                ) -> None:
        if not isinstance(status, ast.Constant):
            self.computed.add(ast.unparse(status))
            return
        if not isinstance(status.value, int) or status.value not in self.statuses:
            return
        self.seen.add(id(status))
        if reason is not None:
            self._add(status, reason, {})
            return
        assert body is not None
        bodies = self._dicts(body)
        if not bodies:  # a body the scan cannot read: reported unresolved
            self.answers.append(Answer(self.name, status.lineno, status.value, None, {}))
        for literal in bodies:
            if "error" in literal:  # else not a call's answer (a health check's status)
                self._add(status, literal["error"], literal)

    def _add(self, status: ast.Constant, reason: ast.expr, literal: dict[str, ast.expr]
             ) -> None:
        keys = {k: self._value(v) for k, v in literal.items() if k == "outcome"}
        for value in self._reasons(reason):
            self.answers.append(Answer(self.name, status.lineno, status.value, value,
                                       {"error": value, **keys}))

    def _dicts(self, node: ast.expr, called: frozenset[str] = frozenset()
               ) -> list[dict[str, ast.expr]]:
        """The dict literals a body can be, by their string keys: the literal; the one
        assigned to a name; those a function (or method) of the vault's returns, by its
        name (``called``: the names followed so far, each once)."""
        if isinstance(node, ast.Name):
            scope = self._enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            return [d for assign in (ast.walk(scope) if scope is not None else ())
                    if isinstance(assign, ast.Assign) and len(assign.targets) == 1
                    and isinstance(assign.targets[0], ast.Name)
                    and assign.targets[0].id == node.id
                    for d in self._dicts(assign.value, called)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name in called:
                return []
            return [d for function in self.functions.get(name, ())
                    for ret in ast.walk(function)
                    if isinstance(ret, ast.Return) and ret.value is not None
                    for d in self._dicts(ret.value, called | {name})]
        if not isinstance(node, ast.Dict):
            return []
        return [{k.value: v for k, v in zip(node.keys, node.values, strict=True)
                 if isinstance(k, ast.Constant) and isinstance(k.value, str)}]

    def _value(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "api"):
            return str(getattr(api, node.attr))
        if isinstance(node, ast.Name) and isinstance(getattr(self.module, node.id, None), str):
            return str(getattr(self.module, node.id))
        return None

    def _reasons(self, node: ast.expr) -> list[str | None]:
        """The reason(s) an answer gives: a constant; or ``e.reason`` of an exception
        caught as ``e``: every reason the vault raises those exceptions with."""
        value = self._value(node)
        if value is not None:
            return [value]
        if (isinstance(node, ast.Attribute) and node.attr == "reason"
                and isinstance(node.value, ast.Name)):
            handler = self._enclosing(node, (ast.ExceptHandler,))
            while handler is not None and not (
                    isinstance(handler, ast.ExceptHandler) and handler.name == node.value.id):
                handler = self._enclosing(handler, (ast.ExceptHandler,))
            if isinstance(handler, ast.ExceptHandler) and handler.type is not None:
                types = (handler.type.elts if isinstance(handler.type, ast.Tuple)
                         else [handler.type])
                found = [r for t in types for r in sorted(self.raised.get(ast.unparse(t), ()))]
                if found and all(ast.unparse(t) in self.raised for t in types):
                    return list(found)
        return [None]

    def _enclosing(self, node: ast.AST, kinds: tuple[type, ...]) -> ast.AST | None:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, kinds):
            parent = self.parents.get(parent)
        return parent


def _raised_with(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """The reasons each exception class of the vault is raised with (``Cls(reason, ...)``,
    a constant first argument), for the answers that pass a caught one's reason on."""
    classes = {node.name for tree in trees.values() for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef)} - _ERROR_CLASSES
    raised: dict[str, set[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id in classes
                    and node.exc.args):
                first = node.exc.args[0]
                if isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) \
                        and first.value.id == "api":
                    raised.setdefault(node.exc.func.id, set()).add(getattr(api, first.attr))
                elif isinstance(first, ast.Constant) and isinstance(first.value, str):
                    raised.setdefault(node.exc.func.id, set()).add(first.value)
    return raised


@functools.cache
def _vault_answers(statuses: range = range(500, 600)
                   ) -> tuple[list[Answer], dict[tuple[str, str], str], list[str]]:
    """Every answer in the vault's source with one of ``statuses`` (5xx by default); the
    computed statuses met; and any such constant given to a call that is none of the
    answers this scan knows."""
    trees = {path.name: ast.parse(path.read_text(), str(path))
             for path in sorted(VAULT.glob("*.py"))}
    raised = _raised_with(trees)
    functions: dict[str, list[ast.AST]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(node.name, []).append(node)
    answers: list[Answer] = []
    computed: dict[tuple[str, str], str] = {}
    unknown: list[str] = []
    for name, tree in trees.items():
        scan = _Scan(name, tree, raised, functions, statuses)
        scan.visit(tree)
        answers += scan.answers
        computed.update({(name, expr): COMPUTED_STATUS.get((name, expr), "")
                         for expr in scan.computed})
        for node in ast.walk(tree):  # a 5xx handed to a call the scan did not read
            if (isinstance(node, ast.Call)
                    and any(isinstance(a, ast.Constant) and type(a.value) is int
                            and a.value in statuses and id(a) not in scan.seen
                            for a in [*node.args, *(k.value for k in node.keywords)])
                    and not _health_answer(node)):
                unknown.append(f"{name}:{node.lineno} {ast.unparse(node)[:120]}")
    # The enclave's refusals, answered with the status their tables give.
    for module, table in (("channels.py", vault_channels._REFUSALS),
                          ("mode.py", vault_mode._STATUS_OF)):
        answers += [Answer(module, 0, status, reason, {"error": reason})
                    for reason, status in table.items() if status in statuses]
    return answers, computed, unknown


def _health_answer(node: ast.Call) -> bool:
    """A health check's answer (a status, no ``error``): not a call's."""
    if not node.args or not isinstance(node.args[0], ast.Dict):
        return False
    keys = {k.value for k in node.args[0].keys if isinstance(k, ast.Constant)}
    return "error" not in keys


def test_every_5xx_the_vault_answers_is_found_and_classified() -> None:
    answers, computed, unknown = _vault_answers()
    assert not unknown, f"a 5xx answer this scan does not read: teach it: {unknown}"
    unexplained = sorted(k for k, why in computed.items() if not why)
    assert not unexplained, f"a computed status: say why it is never an unseen 5xx: " \
                            f"{unexplained}"
    unresolved = [str(a) for a in answers if a.reason is None]
    assert not unresolved, f"a 5xx whose reason the scan cannot name: {unresolved}"
    found = {a.reason for a in answers}
    # The scan sees what it should: a sample of each kind of answer.
    assert {api.PROVIDER_UNAVAILABLE, api.VAULT_STANDBY, api.ANSWER_DROPPED,
            api.LOCK_RELEASED, api.NO_ACCEPTABLE_OFFER, "internal_error",
            "settlement_dead"} <= found, found
    unclassified = sorted(r for r in found if r not in CLASSIFIED)
    assert not unclassified, (
        f"new 5xx reasons of the vault: {unclassified}; add each to CLASSIFIED (and to "
        "REFUSED_BEFORE_PAYING if the vault answers it only before any payment of the "
        "call can have left it)")


def test_the_client_says_nothing_was_paid_only_for_refusals_made_before_paying() -> None:
    before = {r for r, (kind, _) in CLASSIFIED.items() if kind == BEFORE}
    may_have_paid = {r for r, (kind, _) in CLASSIFIED.items() if kind == MAY_HAVE_PAID}
    assert not REFUSED_BEFORE_PAYING & may_have_paid, \
        "a reason answered after a payment may have left would tell the user nothing was paid"
    assert not REFUSED_BEFORE_PAYING - before, REFUSED_BEFORE_PAYING - before
    found = {a.reason for a in _vault_answers()[0]}
    assert not (before & found) - REFUSED_BEFORE_PAYING, (before & found) - REFUSED_BEFORE_PAYING
    assert not MAY_BE_PAID & REFUSED_BEFORE_PAYING


def test_each_5xx_answer_of_the_vault_gets_the_verdict_its_reason_is_classified_with(
) -> None:
    # The client's own verdict on each answer as the vault gives it (its reason, and the
    # outcome its body names where it names one), not only the set's contents.
    wrong = []
    for answer in _vault_answers()[0]:
        assert answer.reason is not None
        kind, _ = CLASSIFIED[answer.reason]
        said = VaultCallError(answer.status, answer.body).may_have_paid
        if said != (kind == MAY_HAVE_PAID):
            wrong.append(f"{answer}: may_have_paid={said}")
    assert not wrong, wrong


# ------------------------------------------------------------------------------ 4xx

#: Every reason the vault answers with a 4xx status, classified as the 5xx are. The client
#: reads a 4xx as "nothing was paid by this attempt" unless its reason is in
#: :data:`MAY_BE_PAID` (or its body names the outcome paid or pending), so a 4xx reason
#: answered after σ_U may have left must be there. The exchanges answer any failure after
#: σ_U 202 ``payment_pending`` (standard mode: the tunnel's PaymentPending; vault mode:
#: ModeInvoker._exchange), so every 4xx but ``replayed_call`` is a refusal made before.
CLASSIFIED_4XX: dict[str, tuple[str, str]] = {
    api.REPLAYED_CALL: (MAY_HAVE_PAID, "the call (or its key, with another createdAt) paid "
                        "already, or is paying; a paid call whose answer was lost is "
                        "answered so, to its retry and to GET /v1/requests/{key}"),
    api.NOT_FOUND: (BEFORE, "no call claimed with this key (standard: the claim precedes "
                    "any payment), no paid call (vault mode: a lost answer is "
                    "replayed_call), or no such route"),
    api.IDEMPOTENCY_KEY_REUSED: (BEFORE, "this attempt (another call under a used key) ran "
                                 "nothing; the first call's answer is asked for by GET"),
    api.CONFLICT: (BEFORE, "a changed offer, or the ledger busy before EXEC: no σ_U"),
    api.CHANNEL_BUSY: (BEFORE, "the pair's lock or the machine's earlier payment: nothing "
                       "signed"),
    api.PRICE_ABOVE_MAXIMUM: (BEFORE, "the price checked before any channel or σ_U"),
    api.INSUFFICIENT_BALANCE: (BEFORE, "no channel (or deposit) for the call: no σ_U"),
    api.NO_ACCEPTABLE_OFFER: (BEFORE, "the 402 names no payable offer: no tunnel"),
    api.OFFER_MISMATCH: (BEFORE, "the 402 disagrees with the provider: no tunnel"),
    api.TARGET_NOT_ALLOWED: (BEFORE, "the target refused before it is asked"),
    api.UNAUTHENTICATED: (BEFORE, "an unsigned call: the vault pays none"),
    api.BAD_REQUEST: (BEFORE, "a malformed call or deposit: nothing was done"),
    api.CLIENT_OUTDATED: (BEFORE, "a client too old to sign this call: nothing was done"),
    api.AUTHORIZATION_REQUIRED: (BEFORE, "a wallet-funded channel awaits its signed "
                                 "deposit (428): no channel yet"),
    api.BAD_AUTHORIZATION: (BEFORE, "the signed deposit is not the one proposed"),
    api.PROPOSAL_REFUSED: (BEFORE, "the provider refused the channel's terms"),
    "deposit_too_small": (BEFORE, "a channel deposit below the price: no channel"),
    "deposit_refused": (BEFORE, "a deposit the vault does not take: nothing moved"),
    "not_operator": (BEFORE, "an operator's endpoint called by another key"),
    "idempotency_conflict": (BEFORE, "vault mode's operator call under a used key"),
    # the enclave's refusals (channels._REFUSALS, mode._STATUS_OF): it changed nothing
    api.STALE_CALL: (BEFORE, "the enclave refused a call signed too long ago"),
    api.WRONG_LIFE: (BEFORE, "the enclave refused a call signed for another life"),
    api.BAD_SIGNATURE: (BEFORE, "the enclave refused the call's signature"),
    api.CREATED_AFTER_SIGNATURE: (BEFORE, "the enclave refused a call dated in the future"),
    "future_call": (BEFORE, "the enclave refused a call dated in the future"),
    "not_a_pool_channel": (BEFORE, "the enclave refused: not a pool channel"),
    "call_used": (BEFORE, "the enclave refused a second pool channel for one call"),
    "deposit_too_large": (BEFORE, "the enclave refused a deposit above the call's cap"),
    "debt_outstanding": (BEFORE, "the enclave refused: the participant owes a debt"),
    "unknown_participant": (BEFORE, "the enclave knows no such participant"),
    "no_statement": (BEFORE, "the enclave has no statement to give"),
    "unknown_channel": (BEFORE, "the enclave knows no such channel"),
    "participant_exiting": (BEFORE, "the enclave refused: the participant is exiting"),
    "funds_settling": (BEFORE, "the enclave refused the call before EXEC: the account's "
                       "money rests on a settlement not landed yet"),
    "pull_outstanding": (BEFORE, "a deposit by pull asked while one is in flight: no call"),
    "pull_unfunded": (BEFORE, "a deposit by pull the wallet cannot fund: no call"),
    "pull_from_contract": (BEFORE, "a deposit by pull from a wallet with code: no call"),
    "unknown_pull": (BEFORE, "an intent for no pull of the signer's: no call"),
    "nothing_to_settle": (BEFORE, "the enclave has nothing to settle"),
}

#: The 4xx answers whose reason the scan cannot name, per module, with why: each is
#: answered before the call's handler runs (its signature, or its body's bounds).
UNRESOLVED_4XX = {"app.py": (1, "api.AuthError: the signature checked first (401)"),
                  "mode_app.py": (2, "api.AuthError (401); a body that is not strict JSON "
                                  "(WireError, 400)")}

#: 4xx constants given to a call the scan does not read as an answer, with why.
UNSEEN_4XX = {
    ("app.py", "getattr(error, 'status_code', 404)"): "a routing error: no handler ran",
    ("channels.py", "_REFUSALS.get(e.reason, 403)"): "the enclave's refusal of a reason "
    "outside its table: it changed nothing (read from the table below for the rest)",
    ("mode.py", "_STATUS_OF.get(e.reason, 400)"): "the enclave's refusal of a reason "
    "outside its table: it changed nothing",
}


def test_every_4xx_the_vault_answers_is_found_and_classified() -> None:
    answers, _, unknown = _vault_answers(range(400, 500))
    unseen = [u for u in unknown
              if (u.split(":", 1)[0], u.split(" ", 1)[1]) not in UNSEEN_4XX]
    assert not unseen, f"a 4xx answer this scan does not read: teach it: {unseen}"
    unresolved: dict[str, int] = {}
    for a in answers:
        if a.reason is None:
            unresolved[a.module] = unresolved.get(a.module, 0) + 1
    assert unresolved == {m: n for m, (n, _) in UNRESOLVED_4XX.items()}, unresolved
    found = {a.reason for a in answers if a.reason is not None}
    assert {api.REPLAYED_CALL, api.NOT_FOUND, api.CHANNEL_BUSY, api.PRICE_ABOVE_MAXIMUM,
            "call_used"} <= found, found
    unclassified = sorted(r for r in found if r not in CLASSIFIED_4XX)
    assert not unclassified, (
        f"new 4xx reasons of the vault: {unclassified}; add each to CLASSIFIED_4XX (and, if "
        "it can be answered after a payment of the call may have left, to MAY_BE_PAID)")


def test_each_4xx_answer_of_the_vault_says_nothing_was_paid_only_if_it_was_refused_before(
) -> None:
    wrong = []
    for answer in _vault_answers(range(400, 500))[0]:
        if answer.reason is None:
            continue  # UNRESOLVED_4XX: answered before the handler runs
        kind, _ = CLASSIFIED_4XX[answer.reason]
        said = VaultCallError(answer.status, answer.body).may_have_paid
        if said != (kind == MAY_HAVE_PAID):
            wrong.append(f"{answer}: may_have_paid={said}")
    assert not wrong, wrong
