"""The evidence chain: one signed record per payment made under a mandate, next to its spend.

Every payment a mandated payer makes leaves one record in the table
``a402_evidence`` of the spend store's database (so the budget and its evidence
live and are backed up together). A record says, in canonical JSON (sorted keys,
no spaces): its sequence number and the hash of the record before it
(``prev``), the mandate's hash, the agent, the request (method, URL and the
hash of the request), the payment payload exactly as sent, the settlement (the
transaction) or the channel receipt, and the hash of the result received.

Why altering one byte is caught: each record's hash is
``keccak256("a402/evidence/v1\\0" ‖ its stored text)``, and the agent signs that
hash with its key (the key the mandate names), so changing any byte of the
text breaks the agent's signature; the next record names this hash as its
``prev``, so deleting or reordering records breaks the chain; the stored hash
and signature columns are recomputed, not trusted. The payment payload is
verified on its own (the EIP-3009 signature by the agent), and so is the
mandate (the owner's signature over its document, from the spend store).
Verification needs no node: :mod:`a402.client.audit` does it offline.

Why cutting records off is caught. One row of ``a402_evidence_head`` names the
newest record (its sequence number and hash), signed by that record's agent
over ``keccak256("a402/evidence-head/v1\\0" ‖ "<seq>:<hash>")``; it is written in
the transaction that appends the record. A tail cut or an emptied table leaves
a head naming a record that is gone, and a head cannot be re-signed for the
shorter chain without the agent's key. Each record of a payment also names its
spend-store reservation (``reservation``), and :mod:`a402.client.audit` asks
that every reservation marked signed has its record: deleting the head as well
leaves signed payments with no record. (A writer who kept an old signed head
and deletes the reservations and edits the totals in step is not caught: the
database is then rewritten wholesale, which only a copy kept elsewhere shows.)

Concurrency. The head row is also the chain's lock: an append reads it ``SELECT
... FOR UPDATE`` (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers
already) before it reads the tail, so concurrent payers queue for their place
instead of racing for the same sequence number, and no record is dropped.

What it does not prove: that the request and result hashes are the bytes the
service saw and sent (only the agent vouches for them; a provider-signed
receipt does that on the ``a402`` path), nor that a settlement transaction was
mined (that takes a node).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from a402.evm.keccak import keccak256
from a402.sqlite import Plain

FORMAT: Final = "a402-evidence/1"
PREFIX: Final = b"a402/evidence/v1\x00"
GENESIS: Final = "0x" + "00" * 32
_ATTEMPTS: Final = 20

metadata = MetaData()
evidence = Table(
    "a402_evidence", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(66), nullable=False),
    Column("mandate", String(66), nullable=True, index=True),
    Column("record", Text, nullable=False),
    Column("signature", String(132), nullable=False),
    Column("created_at", Float, nullable=False),
)

#: The signed head of the chain (module doc): one row, ``id`` 1.
evidence_head = Table(
    "a402_evidence_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(66), nullable=False),
    Column("signature", String(132), nullable=False),
)
HEAD_PREFIX: Final = b"a402/evidence-head/v1\x00"

_HEAD: Final = sql_text("SELECT seq, hash FROM a402_evidence_head WHERE id = 1")
_HEAD_FOR_UPDATE: Final = sql_text("SELECT seq, hash FROM a402_evidence_head WHERE id = 1 "
                                   "FOR UPDATE")
_APPEND: Final = sql_text(
    "INSERT INTO a402_evidence (seq, hash, mandate, record, signature, created_at) "
    "VALUES (:seq, :hash, :mandate, :record, :signature, :at)")
_MOVE_HEAD: Final = sql_text(
    "UPDATE a402_evidence_head SET seq = :seq, hash = :hash, signature = :signature "
    "WHERE id = 1")


def head_hash(seq: int, record: str) -> bytes:
    """What the agent signs for a head naming record ``seq`` whose hash is ``record``."""
    return keccak256(HEAD_PREFIX + f"{seq}:{record.lower()}".encode())


@dataclass(frozen=True)
class EvidenceHead:
    """The stored head, as read (checked by :mod:`a402.client.audit`)."""

    seq: int
    hash: str
    signature: str


def canonical(value: Any) -> str:
    """The one text of a JSON value: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(text: str) -> bytes:
    """What the agent signs for the record stored as ``text``."""
    return keccak256(PREFIX + text.encode())


@dataclass(frozen=True)
class EvidenceRow:
    """One stored record, as read (nothing in it is trusted until :mod:`a402.client.audit`
    checked it)."""

    seq: int
    hash: str
    mandate: str | None
    record: str
    signature: str
    created_at: float


class EvidenceLog:
    """The records in the database behind ``engine`` (the spend store's)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._head_ready = False
        # (Another process may create it between the check and the create: that is fine.)
        with contextlib.suppress(OperationalError, IntegrityError, ProgrammingError):
            metadata.create_all(engine)

    def ready(self) -> None:
        """The head row exists (:meth:`append_in` needs it; made once)."""
        self._ensure_head()

    def _ensure_head(self) -> None:
        """The head row exists, so appenders have a row to queue on. Made (once; concurrent
        creators: one wins) naming the current tail: seq 0 for an empty chain, and for a
        chain written before heads existed its last record, unsigned until the next append
        signs a head. Once seen it is not looked for again here."""
        if self._head_ready:
            return
        with contextlib.suppress(IntegrityError), self.engine.begin() as conn:
            if conn.execute(select(evidence_head.c.id)).first() is None:
                tail = self._tail(conn)
                conn.execute(evidence_head.insert().values(
                    id=1, seq=0 if tail is None else int(tail.seq),
                    hash=GENESIS if tail is None else str(tail.hash), signature=""))
        self._head_ready = True

    @staticmethod
    def _tail(conn: Connection) -> Any:
        return conn.execute(select(evidence.c.seq, evidence.c.hash)
                            .order_by(evidence.c.seq.desc()).limit(1)).first()

    def append(self, fields: dict[str, Any], sign_digest: Callable[[bytes], bytes], *,
               also: Callable[[Connection], None] | None = None) -> int:
        """Add a record of ``fields`` (seq, prev and format are set here), signed with
        ``sign_digest`` (the agent's key); its sequence number. Concurrent writers queue
        on the head row's lock (module doc), so each gets its own place and none is
        dropped; the head is re-signed in the same transaction. The new record follows
        the *head*, not whatever tail the table shows: after a tail was cut, the next
        record names the missing one as ``prev`` and the audit sees the gap. ``also``
        runs in the same transaction (marking the payment's reservation signed)."""
        self._ensure_head()
        for _ in range(_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    return self.append_in(conn, [(fields, sign_digest)], also=also)[-1]
            except IntegrityError:  # a writer of code without the head lock got there first
                continue
        raise RuntimeError("the evidence chain kept moving under this writer: the payment "
                           "was made, its record is NOT written")

    def append_in(self, conn: Connection,
                  items: list[tuple[dict[str, Any], Callable[[bytes], bytes]]], *,
                  also: Callable[[Connection], None] | None = None) -> list[int]:
        """Append one record per ``(fields, sign_digest)`` inside the caller's write
        transaction ``conn`` (the spend store's reservation commits with them: one commit
        per payment); their sequence numbers. The head row is locked first (PostgreSQL;
        SQLite's ``BEGIN IMMEDIATE`` holds the write lock already) and signed once, for
        the last record. An ``IntegrityError`` (a writer without the head lock took a
        sequence number) rolls the caller's transaction back: retry it whole. ``also``
        runs once the head is locked. Call :meth:`ready` first, outside the transaction
        (it may write the head row in one of its own)."""
        locking = self.engine.dialect.name != "sqlite"
        plain = Plain(conn)
        head = plain.one((_HEAD_FOR_UPDATE if locking else _HEAD).text, {})
        if also is not None:
            also(conn)
        last = head if head is not None else self._tail(conn)
        seq, prev = (0, GENESIS) if last is None or int(last[0]) == 0 \
            else (int(last[0]), str(last[1]))
        seqs: list[int] = []
        hash_hex, head_signature = prev, ""
        for fields, sign_digest in items:
            seq += 1
            text = canonical({**fields, "format": FORMAT, "seq": seq, "prev": prev})
            digest = record_hash(text)
            hash_hex = "0x" + digest.hex()
            # Statements prepared once (module level), bound here.
            plain.run(_APPEND.text, {
                "seq": seq, "hash": hash_hex, "mandate": fields.get("mandate"),
                "record": text, "signature": "0x" + bytes(sign_digest(digest)).hex(),
                "at": time.time()})
            head_signature = "0x" + bytes(sign_digest(head_hash(seq, hash_hex))).hex() \
                if len(seqs) == len(items) - 1 else ""
            seqs.append(seq)
            prev = hash_hex
        if not seqs:
            return seqs
        if head is None:  # the head row was deleted: written again
            conn.execute(evidence_head.insert().values(
                id=1, seq=seq, hash=hash_hex, signature=head_signature))
        else:
            plain.run(_MOVE_HEAD.text, {"seq": seq, "hash": hash_hex,
                                        "signature": head_signature})
        return seqs

    def head(self) -> EvidenceHead | None:
        """The stored head (None: no head row)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(evidence_head).where(evidence_head.c.id == 1)).first()
        return None if row is None else EvidenceHead(int(row.seq), str(row.hash),
                                                     str(row.signature))

    def rows(self, mandate: str | None = None) -> list[EvidenceRow]:
        """Every record in chain order (``mandate``: only the records naming it; the
        chain is then checked through the records between them as well)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(evidence).order_by(evidence.c.seq)).all()
        return [EvidenceRow(int(r.seq), r.hash, r.mandate, r.record, r.signature,
                            float(r.created_at)) for r in rows
                if mandate is None or r.mandate == mandate]
