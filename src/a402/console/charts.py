"""Charts of volume and latency over time, drawn as inline SVG on the server.

No script draws them and nothing is fetched: each chart is markup in the page, built
from numbers only (every label goes through :func:`html.escape`), and styled with SVG
presentation attributes, which a ``style-src 'self'`` policy allows (a ``style=``
attribute it would not).
"""

from __future__ import annotations

import math
import time as clock
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 170, 64, 24, 12
BUCKETS = 30


@dataclass(frozen=True)
class Series:
    """Equal time buckets ending now: their start times and one value per bucket."""

    starts: tuple[float, ...]
    width: float
    values: tuple[float | None, ...]


def buckets(times: Iterable[float], *, now: float | None = None, count: int = BUCKETS
            ) -> tuple[float, float]:
    """(start of the first bucket, bucket width): ``count`` buckets of whole minutes that
    end at ``now`` and reach back to the oldest time (at least one minute each)."""
    now = clock.time() if now is None else now
    oldest = min(times, default=now)
    width = max(60.0, math.ceil((now - oldest) / count / 60.0) * 60.0)
    first = math.floor(now / width) * width - (count - 1) * width
    return first, width


def _bucket_of(t: float, first: float, width: float, count: int) -> int | None:
    index = int((t - first) // width)
    return index if 0 <= index < count else None


#: The statuses under which a record's amount was paid: a gateway's ``settled``, a
#: facilitator journal's ``confirmed`` (mined), a vault call's ``paid``, and an A402
#: EXEC the gateway ran (``executed``). Pending, failed and refused payments moved no
#: money (or none yet) and are not volume.
PAID_STATUSES = frozenset({"settled", "confirmed", "paid", "executed"})


def volume_and_latency(records: Sequence[Mapping[str, Any]], *, now: float | None = None,
                       count: int = BUCKETS) -> tuple[Series, Series]:
    """Per bucket: the sum of the amounts paid (atomic units, :data:`PAID_STATUSES`
    only), and the mean latency in milliseconds of every request that reports one
    (None: no such request in that bucket)."""
    timed = [r for r in records if isinstance(r.get("time"), int | float)]
    first, width = buckets((float(r["time"]) for r in timed), now=now, count=count)
    volume = [0.0] * count
    latency_sum = [0.0] * count
    latency_n = [0] * count
    for r in timed:
        i = _bucket_of(float(r["time"]), first, width, count)
        if i is None:
            continue
        amount = r.get("amount")
        if r.get("status") in PAID_STATUSES and isinstance(amount, int | str) \
                and str(amount).isdigit():
            volume[i] += int(amount)
        ms = r.get("latencyMs")
        if isinstance(ms, int | float) and math.isfinite(ms):
            latency_sum[i] += float(ms)
            latency_n[i] += 1
    starts = tuple(first + k * width for k in range(count))
    mean = tuple(latency_sum[k] / latency_n[k] if latency_n[k] else None for k in range(count))
    return Series(starts, width, tuple(volume)), Series(starts, width, mean)


def _label(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _clock(t: float) -> str:
    return clock.strftime("%H:%M", clock.gmtime(t))


def svg(series: Series, *, title: str, unit: str, kind: str) -> str:
    """One chart: ``kind`` ``"bars"`` (volume) or ``"points"`` (latency)."""
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    present = [v for v in series.values if v is not None]
    top = max(present, default=0.0) or 1.0
    step = plot_w / max(1, len(series.values))
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH - 8}" '
             f'y2="{PAD_TOP + plot_h}" stroke="#888"/>',
             f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 10}" text-anchor="end" '
             f'font-size="11" fill="#444">{escape(_label(top))} {escape(unit)}</text>',
             f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + plot_h}" text-anchor="end" '
             f'font-size="11" fill="#444">0</text>']
    for k, value in enumerate(series.values):
        x = PAD_LEFT + k * step
        if k % 5 == 0:
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" font-size="11" fill="#444">'
                         f"{_clock(series.starts[k])}</text>")
        if value is None or (kind == "bars" and value <= 0):
            continue
        h = max(1.0, plot_h * value / top)
        label = escape(f"{_clock(series.starts[k])} UTC: {_label(value)} {unit}")
        if kind == "bars":
            parts.append(f'<rect x="{x + 1:.1f}" y="{PAD_TOP + plot_h - h:.1f}" '
                         f'width="{max(1.0, step - 2):.1f}" height="{h:.1f}" fill="#3a6ea5">'
                         f"<title>{label}</title></rect>")
        else:
            parts.append(f'<circle cx="{x + step / 2:.1f}" cy="{PAD_TOP + plot_h - h:.1f}" '
                         f'r="3.5" fill="#b5523b"><title>{label}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
