"""One hostile, deeply nested body must not kill an a402 process.

py_ecc (pulled in by web3) raises the interpreter's recursion limit to 100,000 when it is
imported; at that limit ``json.loads`` of a body nested 90,000 deep overflows the C stack
and the process dies of a segmentation fault. a402 keeps the limit at
:data:`a402.RECURSION_LIMIT`, whichever is imported first.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PARSE_DEEP = """
import json, sys, threading
answers = []
def parse():
    try:
        json.loads("[" * 90_000 + "]" * 90_000)
        answers.append("parsed")
    except RecursionError:
        answers.append("refused")
worker = threading.Thread(target=parse)
worker.start()
worker.join()
parse()
print(sys.getrecursionlimit(), *answers)
"""


@pytest.mark.parametrize("imports", ["import a402, web3", "import web3, a402",
                                     "import a402; import py_ecc"])
def test_a_body_nested_90000_deep_is_refused_not_a_crash_after_web3_is_imported(
        imports: str) -> None:
    run = subprocess.run([sys.executable, "-c", imports + "\n" + PARSE_DEEP],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["12288", "refused", "refused"]
