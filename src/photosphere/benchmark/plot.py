"""The benchmark figure: ours against the reference per label, coloured by tier.

One row of panels per engine: Teff, log g, [Fe/H] (ours vs reference with both error bars and
the 1:1 line), and a difference panel with (ours − reference) / σ_total per label and the ±1σ,
±2σ bands. Error rows are not drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_path
from ..datasets.reference_stars import LABELS, TIERS

_TITLE = {"teff": "Teff (K)", "logg": "log g (dex)", "feh": "[Fe/H] (dex)"}
_COLOURS = dict(zip(TIERS, ("tab:blue", "tab:purple", "tab:red", "tab:orange", "tab:green",
                            "tab:gray"), strict=True))

_Z_TICKS = (-1000, -100, -30, -10, -5, -3, -2, -1, 0, 1, 2, 3, 5, 10, 30, 100, 1000)


def _column(rows: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    return np.array([float(r[name]) for r in rows], float)


def plot_benchmark(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write the figure of ``rows`` (benchmark table rows) to ``path`` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    engines = list(dict.fromkeys(r["engine"] for r in rows)) or ["—"]
    fig, axes = plt.subplots(len(engines), len(LABELS) + 1, squeeze=False,
                             figsize=(3.2 * (len(LABELS) + 1), 3.0 * len(engines)))
    rng = np.random.default_rng(0)  # horizontal jitter in the difference panel only
    for row_axes, engine in zip(axes, engines, strict=True):
        ok = [r for r in rows if r["engine"] == engine and r["status"] == "ok"]
        for ax, name in zip(row_axes, LABELS, strict=False):
            for tier in TIERS:
                sel = [r for r in ok if r["tier"] == tier]
                if sel:
                    ax.errorbar(_column(sel, f"{name}_ref"), _column(sel, name),
                                xerr=_column(sel, f"{name}_ref_err"),
                                yerr=np.nan_to_num(_column(sel, f"{name}_sigma")), fmt="o",
                                ms=3, lw=0.8, color=_COLOURS[tier], label=tier)
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            lo, hi = min(x0, y0), max(x1, y1)
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_xlabel(f"reference {_TITLE[name]}")
            ax.set_ylabel(f"{engine} {_TITLE[name]}")
        ax = row_axes[-1]
        for k, band in ((1, 0.25), (2, 0.1)):
            ax.axhspan(-k, k, color="0.5", alpha=band, lw=0)
        for j, name in enumerate(LABELS):
            for tier in TIERS:
                z = _column([r for r in ok if r["tier"] == tier], f"{name}_z")
                ax.plot(j + rng.uniform(-0.25, 0.25, z.size), z, "o", ms=3,
                        color=_COLOURS[tier])
        ax.set_xticks(range(len(LABELS)), [_TITLE[n].split(" (")[0] for n in LABELS])
        ax.set_ylabel(f"{engine} (ours − ref) / σ_total")
        ax.set_yscale("symlog", linthresh=3)
        y0, y1 = ax.get_ylim()
        y0, y1 = min(y0, -3.0), max(y1, 3.0)
        ax.set_ylim(y0, y1)
        ticks = [t for t in _Z_TICKS if y0 <= t <= y1]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        handles, labels = row_axes[0].get_legend_handles_labels()
        if handles:
            row_axes[0].legend(handles, labels, fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, dpi=80, format=(path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
