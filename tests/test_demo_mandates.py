"""``a402 demo --act mandates``: the owner's mandate holds against a greedy 402 and dies with
its revocation; the act checks balances itself and says which step failed otherwise."""

import io
import re

from a402.demos.exact import run_demo


def test_the_mandate_act_pays_inside_refuses_a_100x_402_and_a_revoked_mandate() -> None:
    out = io.StringIO()
    assert run_demo(out=out, act="mandates") == 0
    text = out.getvalue()
    assert text.count(" 200  0x") == 3
    assert "refused: mandate_cap_exceeded; nothing was signed" in text
    assert ("refused: mandate_revoked; the payment signed in memory was discarded unsent, "
            "nothing was paid") in text
    assert "same hash: True" in text
    assert ("a402 audit: 6 record(s), every signature and link verified (3 payment(s), each "
            "with its outcome)") in text
    assert "a402 audit: record #1 fails: hash_mismatch" in text
    assert re.search(r"agent +1,000\.000000 +999\.997000 +-0\.003000", text)
    assert re.search(r"provider +0\.000000 +0\.003000 +\+0\.003000", text)
    assert "spent under the mandate (spend store): 0.003000 of 0.010000" in text
    assert "result     OK: paid inside the mandate" in text
