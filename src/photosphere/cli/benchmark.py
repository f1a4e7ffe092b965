"""``photosphere benchmark``: run an engine on the real stars with reference labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import _add_json, emit


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark import make_engines, read_stars, run_benchmark, select, summarise
    from ..benchmark.plot import plot_benchmark
    from ..benchmark.report import star_table, summary_table
    from ..datasets.reference_stars import default_stars_dir

    stars_dir = Path(args.stars_dir) if args.stars_dir else default_stars_dir()
    stars = select(read_stars(stars_dir / "labels.csv"), args.stars, args.tier, args.limit)
    engines = make_engines(args.engine, args.model, args.nn_model)
    rows = run_benchmark(stars, engines, args.output, stars_dir=stars_dir,
                         progress=not args.no_progress)
    if args.systematic_floor:
        from ..benchmark.floor import leave_one_out_by_group

        rows = leave_one_out_by_group(rows)
    summary = summarise(rows)
    if args.plot:
        plot_benchmark(rows, args.plot)
    written = [p for p in (args.output, args.output and str(Path(args.output).with_suffix(
        ".json")), args.plot) if p]
    text = (f"{star_table(rows, args.markdown)}\n\n"
            f"{summary_table(summary, args.markdown)}")
    if written:
        text += f"\n\nwritten: {', '.join(written)}"
    emit(args, {"stars_dir": str(stars_dir), "engine": args.engine, "rows": rows,
                "summary": summary, "written": written}, text)
    return 0


def _register_benchmark(sub: argparse._SubParsersAction) -> None:
    from ..datasets.reference_stars import TIERS

    p = sub.add_parser("benchmark", help="run fit / nn on real stars with reference labels and "
                                         "compare per tier (docs/benchmark.md)")
    p.add_argument("stars_dir", nargs="?", metavar="STARS_DIR",
                   help="folder with labels.csv (default: $PHOTOSPHERE_SHARED_DATA/stars, else "
                        "../shared/data/stars beside the repository)")
    p.add_argument("--engine", choices=("fit", "nn", "all"), default="fit",
                   help="fit: least squares as `photosphere fit FILE --resolution R`; nn: "
                        "`photosphere nn predict FILE`; all: both (default fit)")
    p.add_argument("--model", metavar="MODEL",
                   help="the fit engine's model: a grid or emulator file, or 'grid' "
                        "(default: the command's default model)")
    p.add_argument("--nn-model", metavar="MODEL",
                   help="the nn engine's network: a checkpoint file or shipped name (default: "
                        "the default network)")
    p.add_argument("--stars", nargs="+", metavar="NAME",
                   help="only stars whose name or file contains one of these (case-insensitive)")
    p.add_argument("--tier", choices=TIERS, help="only the stars of this tier")
    p.add_argument("--limit", type=int, help="only the first N stars (after --stars/--tier)")
    p.add_argument("-o", "--output", metavar="OUT.ecsv",
                   help="results table (ECSV, and OUT.json beside it), rewritten after each "
                        "star; a rerun keeps its finished stars and retries errors")
    p.add_argument("--plot", metavar="FIG.png",
                   help="ours vs reference per label, coloured by tier, and the differences")
    p.add_argument("--systematic-floor", action="store_true",
                   help="add to each star's σ the systematic floor measured on the OTHER stars "
                        "of its tier and engine (leave-one-out; docs/benchmark.md)")
    p.add_argument("--markdown", action="store_true",
                   help="print the tables as Markdown (for a docs page)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_json(p)
    p.set_defaults(func=_cmd_benchmark)
