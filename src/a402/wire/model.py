"""The base every wire model shares: camelCase on the wire, lossless, no nulls.

Why these settings:
- ``extra="allow"``: a v2 client must echo the chosen requirement verbatim into
  ``accepted`` (the TS server deep-compares it), and extensions keep adding
  fields. Keeping unknown fields makes parse → serialise lossless.
- ``exclude_none`` on output: absent optional fields are omitted, never sent as
  ``null``; the TS zod schemas have rejected ``null`` before. Opaque JSON blobs
  (``extra``, ``payload``, ``extensions``, ``outputSchema``) are carried as they
  came, nulls inside them included, because their meaning is not ours to edit.
- ``frozen``: a parsed payment is evidence; nothing should edit it in place.
  Build a changed copy with ``model_copy(update=...)``.
"""

from __future__ import annotations

import json
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from a402.wire.errors import WireError


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict exactly as it goes on the wire."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """Compact JSON with non-ASCII left as UTF-8 (what the header codec encodes)."""
        return json.dumps(
            self.to_wire(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )

    @classmethod
    def from_wire(cls, data: Any, *, reason: str) -> Self:
        """Validate a decoded JSON value, turning pydantic's errors into a WireError."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise WireError(reason, summarise(cls.__name__, exc)) from exc


def summarise(name: str, exc: ValidationError) -> str:
    """A short, log-safe message: field paths and error kinds, never input values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"(+{more} more)")
    return f"bad {name}: " + "; ".join(parts)
