"""A CPU sampling profiler for the benchmark's processes (Linux/Unix, main thread).

cProfile charges every Python call a fixed cost, so it inflates code made of many
small calls against code that spends its time in one C call (a signature, an
fsync): its percentages mislead exactly where this benchmark needs them. This
sampler instead asks the kernel for a ``SIGPROF`` every ``interval`` seconds of
the process's CPU time (``ITIMER_PROF``) and records the main thread's Python
stack at that moment. A C call is charged to the Python line that made it (the
handler runs when it returns); CPU used by other threads is charged to whatever
the main thread was doing, so read those samples with the per-thread CPU figures.
With ``threads``, each sample also records the stack of every other thread that is
not waiting (its innermost frame is not a queue, lock or selector wait), under a
``[thread]`` root: a guess at what those threads spend their CPU on, since a signal
does not say which thread was running.

``Sampler.dump`` writes the stacks in the "folded" format (``a;b;c count``) that
flame-graph tools read; :func:`summary` reads them back as self/inclusive shares.
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


class Sampler:
    def __init__(self, interval: float = 0.001, *, threads: bool = True) -> None:
        self.interval = interval
        self.threads = threads
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        self.stacks[_stack(frame)] += 1
        if self.threads:  # other threads' stacks too, unless they wait (a guess: see above)
            main = threading.main_thread().ident
            for ident, other in sys._current_frames().items():
                if ident != main:
                    stack = _stack(other)
                    if stack and not stack[-1].endswith(_WAITING):
                        self.stacks[("[thread]", *stack)] += 1

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)

    def dump(self, path: Path) -> None:
        path.write_text("".join(f"{';'.join(s)} {n}\n" for s, n in self.stacks.items()))


_WAITING = (":wait", ":get", ":_worker", ":select", ":acquire", ":_wait_for_tstate_lock")


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    stack = []
    while frame is not None:
        code = frame.f_code
        stack.append(f"{_short(code.co_filename)}:{code.co_name}")
        frame = frame.f_back
    return tuple(reversed(stack))


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.rsplit("/", 1)[-1]


def summary(paths: list[Path], top: int = 40) -> str:
    """Self and inclusive shares (%) of the functions in folded files."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, count = line.rsplit(" ", 1)
            n = int(count)
            frames = stack.split(";")
            total += n
            own[frames[-1]] += n
            for f in set(frames):
                inclusive[f] += n
    lines = [f"{total} samples", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary([Path(p) for p in sys.argv[1:]]))
