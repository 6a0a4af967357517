"""A paid stream's request headers, hostile: every bad ``A402-Stream-Group`` is a 400
StreamError (the enclave charges nothing for it), never another exception."""

from __future__ import annotations

import pytest

from a402.provider.a402_streams import MAX_GROUP, StreamError, group_size


@pytest.mark.parametrize("value", [b"\xb2", b"1\xb9", b"\xb3", b"0", b"-1", b"+5", b"1e3",
                                   b"", b" ", b"9" * 40, str(MAX_GROUP + 1).encode(),
                                   "\u0665".encode(), b"\x00"])
def test_a_bad_stream_group_is_refused_as_bad_stream_group(value: bytes) -> None:
    with pytest.raises(StreamError) as refused:
        group_size([(b"a402-stream-group", value)])
    assert (refused.value.status, refused.value.reason) == (400, "bad_stream_group")


def test_a_good_stream_group_is_read() -> None:
    assert group_size([(b"A402-Stream-Group", b" 50 ")]) == 50
    assert group_size([(b"a402-stream-group", str(MAX_GROUP).encode())]) == MAX_GROUP
    assert group_size([(b"other", b"1")]) is None
