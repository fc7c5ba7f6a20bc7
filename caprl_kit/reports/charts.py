"""The chart helpers every report template shares: inline SVG, escaped labels, one palette."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"]


def num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def hbars(
    rows: Sequence[tuple[str, float]],
    *,
    svg_id: str | None = None,
    label: str = "",
    label_width: int = 140,
    bar_width: int = 420,
    digits: int | None = None,
    color: str = PALETTE[0],
) -> Markup:
    """One horizontal bar per (label, value), scaled to the largest value; the value is printed after its bar
    (``digits``: decimals, None: as is)."""
    top = max([v for _, v in rows] + [1e-12]) if rows else 1.0
    parts = []
    for i, (name, value) in enumerate(rows):
        w, y = bar_width * (value / top if top > 0 else 0.0), 10 + i * 30
        shown = value if digits is None else f"{value:.{digits}f}"
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="13">{escape(name)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="20" fill="{color}"/>'
            f'<text x="{label_width + 5 + w:.1f}" y="{y + 15}" font-size="13">{escape(shown)}</text>'
        )
    ident = f' id="{escape(svg_id)}"' if svg_id else ""
    return Markup(
        f'<svg{ident} width="{label_width + bar_width + 80}" height="{20 + 30 * len(rows)}" role="img" '
        f'aria-label="{escape(label)}">{"".join(parts)}</svg>'
    )


def grouped_hbars(
    groups: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    *,
    svg_id: str | None = None,
    label: str = "",
    width: int = 640,
) -> Markup:
    """Per group a bold title, then one bar per (series, value in [0, 1]); series colours follow the palette."""
    rows, y, bar, gap = [], 10, 18, 14
    for title, values in groups:
        rows.append(f'<text x="0" y="{y + 12}" font-size="13" font-weight="bold">{escape(title)}</text>')
        y += 18
        for i, (series, value) in enumerate(values):
            w = (width - 260) * value
            rows.append(
                f'<rect x="200" y="{y}" width="{w:.1f}" height="{bar - 4}" fill="{PALETTE[i % len(PALETTE)]}"/>'
                f'<text x="0" y="{y + 11}" font-size="12">{escape(series[-28:])}</text>'
                f'<text x="{205 + w:.1f}" y="{y + 11}" font-size="12">{value:.3f}</text>'
            )
            y += bar
        y += gap
    ident = f' id="{escape(svg_id)}"' if svg_id else ""
    return Markup(
        f'<svg{ident} width="{width}" height="{y}" role="img" aria-label="{escape(label)}">{"".join(rows)}</svg>'
    )


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    y_range: tuple[float, float] | None = None,
    width: int = 460,
    height: int = 220,
) -> Markup:
    """One polyline per named series of (x, y) points, axes with min/max labels, in a captioned figure."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return Markup(f"<p>{escape(title)}: no data</p>")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = 36

    def xy(x: float, y: float) -> str:
        return (
            f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},"
            f"{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}"
        )

    lines, legend = [], []
    for i, (name, pts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        lines.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(xy(*p) for p in pts)}"/>')
        legend.append(f'<text x="{pad + 6 + 150 * i}" y="14" fill="{c}" font-size="12">{escape(name)}</text>')
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<text x="2" y="{height - pad}" font-size="11">{y0:.2f}</text><text x="2" y="{pad + 4}" font-size="11">'
        f'{y1:.2f}</text><text x="{pad}" y="{height - 8}" font-size="11">{x0:g}</text>'
        f'<text x="{width - pad - 20}" y="{height - 8}" font-size="11">{x1:g}</text>'
    )
    return Markup(
        f'<figure><svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">{axes}'
        f"{''.join(lines)}{''.join(legend)}</svg><figcaption>{escape(title)}</figcaption></figure>"
    )
