#!/usr/bin/env python3
"""Grouped horizontal bar chart (SVG) of a benchmark's summary.tsv, standard library only.

    bench/chart.py SUMMARY_TSV OUT_SVG [SUBTITLE]

One group per workload, one bar per target, one colour per target. Bars are scaled per workload:
"hello" answers thousands of times faster than WordPress, and one scale for both would leave the
WordPress bars invisible; the labels carry the absolute numbers.
"""

import csv
import sys
from xml.sax.saxutils import escape

COLOURS = {
    "tokio_php": "#e8590c",
    "tokio_php-worker": "#c92a2a",
    "stub": "#ffa94d",
    "nginx+php-fpm": "#2f9e44",
    "apache+mod_php": "#7048e8",
}
FALLBACK_COLOUR = "#868e96"

WIDTH = 1060
LABEL_W = 190  # target names, right-aligned before the bars
BAR_MAX = 480
BAR_H = 20
BAR_GAP = 6
GROUP_GAP = 18
TITLE_H = 70


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def bar_label(row):
    """Req/s, and for tokio_php's rows how they compare with the peers."""
    rps = number(row["rps_median"]) or 0.0
    parts = [f"{rps:,.0f} req/s"]
    if row["target"] in ("tokio_php", "tokio_php-worker", "stub"):
        for column, peer in (("vs_nginx", "nginx + php-fpm"), ("vs_apache", "Apache")):
            ratio = number(row[column])
            if ratio is not None:
                parts.append(f"{ratio:.2f}\u00d7 {peer}")
    return " \u00b7 ".join(parts)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: chart.py SUMMARY_TSV OUT_SVG [SUBTITLE]")
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        sys.exit(f"chart.py: {sys.argv[1]} has no rows")
    subtitle = sys.argv[3] if len(sys.argv) == 4 else ""

    groups = {}
    for row in rows:
        groups.setdefault(row["workload"], []).append(row)
    legend = {}
    for row in rows:
        legend.setdefault(row["target"], row["label"])

    height = TITLE_H + 30
    for members in groups.values():
        height += 22 + len(members) * (BAR_H + BAR_GAP) + GROUP_GAP

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text x="16" y="28" font-size="18" font-weight="bold">'
        "Requests per second (median of rounds, higher is better)</text>",
        f'<text x="16" y="48" fill="#495057">{escape(subtitle)}</text>',
    ]
    x = 16
    for target, label in legend.items():
        colour = COLOURS.get(target, FALLBACK_COLOUR)
        out.append(f'<rect x="{x}" y="{TITLE_H - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 17}" y="{TITLE_H}">{escape(label)}</text>')
        x += 30 + 7 * len(label)

    y = TITLE_H + 30
    for workload, members in groups.items():
        out.append(f'<text x="16" y="{y + 14}" font-weight="bold">{escape(workload)}</text>')
        y += 22
        top = max((number(m["rps_median"]) or 0.0) for m in members) or 1.0
        for row in members:
            rps = number(row["rps_median"]) or 0.0
            width = max(1.0, BAR_MAX * rps / top)
            colour = COLOURS.get(row["target"], FALLBACK_COLOUR)
            mid = y + BAR_H / 2 + 4.5
            out.append(
                f'<text x="{LABEL_W - 8}" y="{mid}" text-anchor="end">{escape(row["label"])}</text>'
            )
            out.append(
                f'<rect x="{LABEL_W}" y="{y}" width="{width:.1f}" height="{BAR_H}" '
                f'fill="{colour}"/>'
            )
            out.append(
                f'<text x="{LABEL_W + width + 6:.1f}" y="{mid}">{escape(bar_label(row))}</text>'
            )
            y += BAR_H + BAR_GAP
        y += GROUP_GAP
    out.append("</svg>")

    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
