"""Text tables of a benchmark run: one line per star, one line per tier and label.

``markdown=True`` gives the same tables as Markdown (the docs page).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..datasets.reference_stars import LABELS

_FORMAT = {"teff": ("{:.0f}", "{:.0f}"), "logg": ("{:.2f}", "{:.2f}"),
           "feh": ("{:.2f}", "{:.2f}")}
_TITLE = {"teff": "Teff", "logg": "log g", "feh": "[Fe/H]"}
_UNIT = {"teff": "K", "logg": "dex", "feh": "dex"}


def _pm(value: float, sigma: float, name: str) -> str:
    if not math.isfinite(value):
        return "—"
    fv, fs = _FORMAT[name]
    return fv.format(value) + ("±" + fs.format(sigma) if math.isfinite(sigma) else "")


def _num(value: float, fmt: str) -> str:
    return fmt.format(value) if math.isfinite(value) else "—"


def _table(header: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        def cells(line: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"

        out = [cells(header), "|" + "---|" * len(header), *(cells(line) for line in lines)]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line).rstrip() for line in [header, *lines])


def _short(message: str, limit: int = 110) -> str:
    return message if len(message) <= limit else message[:limit - 1] + "…"


def star_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Per star: engine, star, tier, then per label reference ± err, ours ± σ, difference and
    difference / σ_total; time (s), χ²_red and flags; error rows carry their message (cut to
    110 characters; the full one is in the ECSV/JSON)."""
    header = ["engine", "star", "tier"]
    for name in LABELS:
        t = _TITLE[name]
        header += [f"{t} ref", f"{t} ours", f"Δ{t}", "Δ/σ"]
    header += ["s", "χ²_red", "flags"]
    lines = []
    for r in rows:
        line = [r["engine"], r["star"], r["tier"]]
        for name in LABELS:
            fmt = _FORMAT[name][0]
            line += [_pm(r[f"{name}_ref"], r[f"{name}_ref_err"], name),
                     _pm(r[name], r[f"{name}_sigma"], name),
                     _num(r[f"{name}_diff"], "{:+" + fmt[2:]),
                     _num(r[f"{name}_z"], "{:+.1f}")]
        line += [_num(r["seconds"], "{:.1f}"), _num(r["chi2_reduced"], "{:.3g}"),
                 _short(r["message"]) if r["status"] != "ok" else r["flags"]]
        lines.append(line)
    return _table(header, lines, markdown)


def summary_table(summary: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Per engine, tier and label: stars (errors), N, mean and median |error| and the fractions
    within 1 and 2 σ_total."""
    header = ["engine", "tier", "label", "stars (errors)", "N", "mean |Δ|", "median |Δ|",
              "≤1σ", "≤2σ"]
    lines = []
    for s in summary:
        fmt = _FORMAT[s["label"]][0]
        lines.append([s["engine"], s["tier"], f"{_TITLE[s['label']]} ({_UNIT[s['label']]})",
                      f"{s['n_stars']} ({s['n_errors']})", str(s["n"]),
                      _num(s["mean_abs"], fmt), _num(s["median_abs"], fmt),
                      _num(100 * s["within_1sigma"], "{:.0f}%"),
                      _num(100 * s["within_2sigma"], "{:.0f}%")])
    return _table(header, lines, markdown)
