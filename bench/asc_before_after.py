"""``bench/asc.py``'s CPU ratio, before and after, in one run: this checkout against an
earlier commit, their runs alternated.

Issue 12 asks that moving the protocol into the enclaves not make the ratio of the three
roles' CPU per paid request to the protocol's own cryptography worse than it was, and to
report it before and after. That ratio moves with the host far more than with the code (the
issue read about 9x on its host; the commit that added the line reads 21-28x on another), so a
figure taken in one session says nothing against a figure taken in another: both versions
must run on the same host, at the same time. This script makes a git worktree of
``--before`` (by default 2197036, the commit that added the ratio line to ``bench/asc.py``,
before any of issue 12's work), then runs each version's own ``bench/asc.py`` in turn,
``after, before, after, before, ...`` (``--pairs`` of each), so that a pair shares the
host's load as closely as one machine allows.

For each run it prints the CPU per paid request of each role and the ratio the run printed
(its own ``bench/crypto.py`` figure as the denominator, itself noisy); then, per pair, the
after/before ratio of the three roles' CPU per paid request (the denominator is the same
code in both versions, so it drops out) and the two ratios over the median of every run's
cryptography figure. Writes ``bench/results/asc_before_after.json``.

    python bench/asc_before_after.py [--before REV] [--pairs N]

Each run takes about a minute; the worktree is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "asc_before_after.json"
BEFORE = "2197036"  # bench/asc.py's ratio line added; issue 12's work not yet begun


def run(checkout: Path, out: Path) -> dict[str, Any]:
    """One ``bench/asc.py`` of ``checkout`` (its own code, this interpreter)."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    subprocess.run([sys.executable, "bench/asc.py", "--sizes", "100", "--out", str(out)],
                   cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    cpu = r["many_channels"]["cpu_ms_per_request"]
    return {"cpu_ms_per_request": cpu, "cpu_ms_total": sum(cpu.values()),
            "crypto_us": r["protocol_crypto_us_per_request"],
            "ratio": r["cpu_per_request_over_crypto"],
            "per_second": r["many_channels"]["per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="the earlier commit (default %(default)s)")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"after": [], "before": []}
    with tempfile.TemporaryDirectory(prefix="a402-before-") as tmp:
        before = Path(tmp) / "checkout"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), args.before],
                       cwd=ROOT, check=True)
        try:
            if (ROOT / "node_modules").exists():  # anvil and solc, as installed here
                (before / "node_modules").symlink_to(ROOT / "node_modules")
            for i in range(args.pairs):
                for name, checkout in (("after", ROOT), ("before", before)):
                    print(f"pair {i + 1}/{args.pairs}: {name} ...", file=sys.stderr)
                    runs[name].append(run(checkout, Path(tmp) / f"{name}-{i}.json"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=False)
    crypto = statistics.median(r["crypto_us"] for rs in runs.values() for r in rs)
    pairs = [a["cpu_ms_total"] / b["cpu_ms_total"]
             for a, b in zip(runs["after"], runs["before"], strict=True)]
    result = {"before": args.before, "runs": runs, "crypto_us_median": crypto,
              "cpu_after_over_before_by_pair": pairs,
              "cpu_after_over_before": statistics.median(pairs),
              "ratio_over_median_crypto": {
                  name: statistics.median(r["cpu_ms_total"] for r in rs) * 1000 / crypto
                  for name, rs in runs.items()}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"bench/asc.py, 50 channels, after (this checkout) and before ({args.before}), "
          "alternated")
    print(f"{'run':<10} {'CPU ms per paid request, by role':<48} {'total':>6} "
          f"{'crypto µs':>9} {'ratio':>6}")
    for i in range(args.pairs):
        for name in ("after", "before"):
            r = runs[name][i]
            roles = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_request"].items())
            print(f"{f'{name} {i + 1}':<10} {roles:<48} {r['cpu_ms_total']:6.2f} "
                  f"{r['crypto_us']:9.0f} {r['ratio']:5.1f}x")
    print(f"\nthe three roles' CPU per paid request, after / before, by pair: "
          f"{', '.join(f'{p:.2f}' for p in pairs)} (median {result['cpu_after_over_before']:.2f})")
    ratios = result["ratio_over_median_crypto"]
    print(f"over the median cryptography figure of all runs ({crypto:.0f} µs): "
          f"after {ratios['after']:.1f}x, before {ratios['before']:.1f}x")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
