"""The portal's chart of a webhook's last 24 hours: deliveries that succeeded and failed per
hour of their creation (one aggregate query on the history,
:meth:`~chatbot_webhooks.history.reads.HistoryReads.last_day`), drawn on the server as SVG.

No JavaScript and no inline styles (the portal's CSP allows neither): the bars' colours are SVG
presentation attributes and the width comes from the portal's stylesheet, so the chart scales
to the page (readable at 360 px: 24 bars, hour labels every six hours). It says what it shows
in words too (its title and description, and a bar's title per hour), for screen readers and
for hovering. Only what the log keeps is counted: at most ``WEBHOOKS_LOG_MAX_PER_WEBHOOK``
deliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..history.reads import HOUR_MS, Hour

#: Drawing size in SVG units (the viewBox; the page scales it).
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 480, 170, 34, 22, 10
SUCCEEDED_FILL, FAILED_FILL = "#2e7d32", "#c62828"


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def _top(value: int) -> int:
    """A round top for the scale: 1, 2, 5, 10, 20, 50 ... at least ``value``."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def summary(hours: list[Hour]) -> str:
    ok, bad = sum(h.succeeded for h in hours), sum(h.failed for h in hours)
    waiting = sum(h.pending for h in hours)
    text = f"Last 24 hours: {ok:,} succeeded, {bad:,} failed"
    return text + (f", {waiting:,} pending." if waiting else ".")


def svg(hours: list[Hour]) -> str:
    """The chart as an ``<svg>`` element (numbers and fixed words only: nothing to escape)."""
    top = _top(max((h.succeeded + h.failed for h in hours), default=0))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    step = plot_w / len(hours)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Deliveries per hour, last 24 hours (UTC)</title>',
        f'<desc id="chart-desc">{summary(hours)} Green: succeeded; red: failed, stacked on '
        "top.</desc>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" y2="{TOP + plot_h}" '
        'stroke="#777" stroke-width="1"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="11" '
        f'fill="#444">{top:,}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="11" '
        'fill="#444">0</text>',
    ]
    for n, hour in enumerate(hours):
        x = LEFT + n * step + 1
        ok_h = plot_h * hour.succeeded / top
        bad_h = plot_h * hour.failed / top
        label = (f"{_hhmm(hour.start_ms)}-{_hhmm(hour.start_ms + HOUR_MS)} UTC: "
                 f"{hour.succeeded} succeeded, {hour.failed} failed")
        parts.append(f"<g><title>{label}</title>")
        parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - ok_h:.1f}" width="{step - 2:.1f}" '
                     f'height="{ok_h:.1f}" fill="{SUCCEEDED_FILL}"/>')
        parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - ok_h - bad_h:.1f}" '
                     f'width="{step - 2:.1f}" height="{bad_h:.1f}" fill="{FAILED_FILL}"/>')
        parts.append("</g>")
        if n % 6 == 0 or n == len(hours) - 1:
            parts.append(f'<text x="{x + (step - 2) / 2:.1f}" y="{HEIGHT - 6}" '
                         f'text-anchor="middle" font-size="11" fill="#444">'
                         f"{_hhmm(hour.start_ms)}</text>")
    parts.append("</svg>")
    return "".join(parts)
