"""Helpers shared by the benchmarks: where the real data is, and the record of the conditions a
timing was taken under, so that a ratio between two codes is printed only when it compares like
with like.

``SHARED``: ``$PHOTOSPHERE_SHARED_DATA``, else ``../shared/data`` beside the repository (the
layout CI uses).

Conditions (:func:`environment`): the BLAS/OpenMP libraries actually loaded and the kernel each
uses (``threadpoolctl.threadpool_info()``: library, version, architecture, threads), the
variables that force a kernel or a thread count (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE,
OPENBLAS/OMP/MKL_NUM_THREADS, ...), torch's thread count when torch is loaded, the core count
and the 1-minute load average. :func:`ratio_refusals` lists why two records are not comparable
(an empty list: they are). A peer that runs in its own interpreter records its side with
``python benchmarks/_shared.py --environment MODULE ...`` (after importing the modules it uses),
which is why this file needs only the standard library (and threadpoolctl when present) and runs
on Python 3.9.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SHARED = Path(os.environ.get("PHOTOSPHERE_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))

BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_VERBOSE",
                  "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                  "MKL_DEBUG_CPU_TYPE", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                  "GOTO_NUM_THREADS", "BLIS_NUM_THREADS", "NUMBA_NUM_THREADS")


def thread_env(threads: int, base: dict | None = None) -> dict:
    """A copy of ``base`` (default: this process's environment) with every BLAS/OpenMP thread
    variable set to ``threads``; kernel-forcing variables are passed through unchanged (they
    are recorded, and the kernels they select are compared)."""
    env = dict(os.environ if base is None else base)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    return env


def one_thread() -> None:
    """This process on one thread: torch, and every BLAS threadpoolctl can reach."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def environment() -> dict:
    """The conditions of this process now (call it after importing the numerical libraries)."""
    libraries = []
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        for lib in threadpool_info():
            libraries.append({"api": lib.get("internal_api"), "version": lib.get("version"),
                              "architecture": lib.get("architecture"),
                              "threads": lib.get("num_threads"),
                              "file": Path(lib.get("filepath", "")).name})
    record = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "threadpoolctl": threadpool_info is not None,
        "libraries": libraries,
        "variables": {k: os.environ[k] for k in BLAS_VARIABLES if k in os.environ},
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    for name in ("numpy", "scipy", "torch", "numba"):
        module = sys.modules.get(name)
        if module is not None:
            record[f"{name}_version"] = getattr(module, "__version__", "?")
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch_threads"] = torch.get_num_threads()
    return record


# OpenBLAS core types by the vector instructions of their kernels: what sets the speed of the
# BLAS calls (Cooperlake and SapphireRapids add bf16 routines to the SkylakeX double kernels).
KERNEL_FAMILY = {
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), "avx512"),
    **dict.fromkeys(("haswell", "zen", "skylake"), "avx2"),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller", "excavator"),
                    "avx"),
    **dict.fromkeys(("prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "opteron",
                     "barcelona", "nano", "katmai", "coppermine", "northwood"), "sse"),
}
BLAS_APIS = ("openblas", "mkl", "blis", "flexiblas")


def _blas(record: dict) -> tuple[set, set]:
    """(kernel families, thread counts) of the BLAS libraries loaded in one record."""
    families, threads = set(), set()
    for lib in record["libraries"]:
        if lib["api"] not in BLAS_APIS:
            continue
        arch = (lib["architecture"] or lib["api"]).lower()
        families.add(KERNEL_FAMILY.get(arch, arch))
        threads.add(lib["threads"])
    return families, threads


def ratio_refusals(ours: dict, peer: dict, loads: list[float] | None = None) -> list[str]:
    """Why a speed ratio between two runs with these records would not compare like with like.

    ours, peer: :func:`environment` records of the two sides; loads: every 1-minute load
    average sampled around the runs (the records' own are added). Reasons: threadpoolctl missing
    on a side (the BLAS in use is unknown); BLAS kernels of different vector instruction sets
    (e.g. an OpenBLAS too old for this CPU falling back to its generic SSE kernel, or a core type
    forced by OPENBLAS_CORETYPE on one side only); different BLAS or torch thread counts; a
    load average above the core count. The variables themselves are recorded, not compared:
    what they change is the kernel, which is.
    """
    reasons = []
    for who, rec in (("ours", ours), ("peer", peer)):
        if not rec.get("threadpoolctl"):
            reasons.append(f"{who}: threadpoolctl is not installed in {rec.get('executable')}, "
                           "so the BLAS library and kernel in use are unknown")
    (fam_a, thr_a), (fam_b, thr_b) = _blas(ours), _blas(peer)
    if fam_a and fam_b and fam_a != fam_b:
        reasons.append(f"BLAS kernels differ: ours {sorted(fam_a)}, peer {sorted(fam_b)} "
                       f"(ours: {describe(ours)}; peer: {describe(peer)})")
    if thr_a and thr_b and thr_a != thr_b:
        reasons.append(f"BLAS threads differ: ours {sorted(thr_a)}, peer {sorted(thr_b)}")
    if ours.get("torch_threads") and peer.get("torch_threads") and (
            ours["torch_threads"] != peer["torch_threads"]):
        reasons.append(f"torch threads differ: ours {ours['torch_threads']}, "
                       f"peer {peer['torch_threads']}")
    cores = min(ours["cores"] or 1, peer["cores"] or 1)
    samples = [ours["load_average_1min"], peer["load_average_1min"], *(loads or [])]
    if max(samples) > cores:
        reasons.append(f"load average reached {max(samples):.2f} on {cores} cores (another "
                       "job shared the CPU: rerun when the machine is quiet)")
    return reasons


def describe(record: dict) -> str:
    """One line: libraries with kernel and threads, forcing variables, load."""
    libs = ", ".join(f"{lib['api']} {lib['version'] or ''} {lib['architecture'] or ''}"
                     f" x{lib['threads']}".replace("  ", " ") for lib in record["libraries"])
    variables = " ".join(f"{k}={v}" for k, v in record["variables"].items()) or "none set"
    torch = f", torch threads {record['torch_threads']}" if "torch_threads" in record else ""
    return (f"python {record['python']}, {libs or 'no BLAS recorded'}{torch}; variables: "
            f"{variables}; load {record['load_average_1min']:.2f} on {record['cores']} cores")


def print_ratio(label: str, value: float, reasons: list[str], fmt: str = "{:.1f}x") -> None:
    """Print a ratio, or why it is withheld."""
    if reasons:
        print(f"{label}: NOT PRINTED, the two sides did not run under the same conditions:")
        for reason in reasons:
            print(f"  - {reason}")
    else:
        print(f"{label}: {fmt.format(value)}")


if __name__ == "__main__":
    # python _shared.py --environment [MODULE ...]: import the modules, print the record (JSON)
    if len(sys.argv) >= 2 and sys.argv[1] == "--environment":
        import importlib

        for module in sys.argv[2:]:
            importlib.import_module(module)
        print(json.dumps(environment()))
    else:
        sys.exit(f"usage: {sys.argv[0]} --environment [MODULE ...]")


def close_report(report: dict, log, as_json: bool) -> None:
    """Record the environment and the load average after the run in ``report`` (which holds
    ``load_average_before``) and print them on ``log``; then, when ``as_json``, the whole
    report as JSON on stdout."""
    import json

    env = environment()
    report["environment"] = env
    report["load_average_after"] = os.getloadavg()
    print(f"environment: {describe(env)}; load before {report['load_average_before']}, "
          f"after {report['load_average_after']}", file=log)
    if as_json:
        print(json.dumps(report, default=float, indent=1))
