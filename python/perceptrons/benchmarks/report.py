"""Markdown tables and result files shared by the benchmark families."""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numeric-looking columns are right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def numeric(i):
        return rows and all(r[i][:1].isdigit() or r[i][:1] in "-." or r[i] == "n/a" for r in rows)

    align = [numeric(i) for i in range(len(headers))]
    line = lambda cells: "| " + " | ".join(c.rjust(w) if a else c.ljust(w)
                                           for c, w, a in zip(cells, widths, align)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if a else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def fmt_ratio(r: dict) -> str:
    """median and [min, max] of per-round ratios, e.g. '3.21x [2.95-3.40]'."""
    return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"


def fmt_rate(x: float) -> str:
    """Samples per second in engineering units, e.g. 12.3M."""
    x = float(f"{x:.3g}")  # round first, so that 999.6e3 is shown as 1M, not 1e+03k
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def write_results(out: str, stem: str, data: dict, markdown: str) -> list:
    """Writes <out>/<stem>.json and <out>/<stem>.md; returns their paths."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, stem + ".json"), os.path.join(out, stem + ".md")]
    with open(paths[0], "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown.rstrip() + "\n")
    return paths
