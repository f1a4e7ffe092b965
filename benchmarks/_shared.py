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
                  "GOTO_NUM_THREADS", "BLIS_NUM_THREADS")
# variables that change which kernel runs (not only how many threads)
KERNEL_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_DEBUG_CPU_TYPE",
                    "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def thread_env(threads: int, base: dict | None = None) -> dict:
    """A copy of ``base`` (default: this process's environment) with every BLAS/OpenMP thread
    variable set to ``threads``; kernel-forcing variables are passed through unchanged (they
    are recorded, and two sides are compared only when they agree)."""
    env = dict(os.environ if base is None else base)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


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
    for name in ("numpy", "scipy", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            record[f"{name}_version"] = getattr(module, "__version__", "?")
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch_threads"] = torch.get_num_threads()
    return record


def _kernels(record: dict) -> dict:
    """{library api: set of (architecture, threads)} of one record."""
    out: dict = {}
    for lib in record["libraries"]:
        out.setdefault(lib["api"], set()).add((lib["architecture"], lib["threads"]))
    return out


def ratio_refusals(ours: dict, peer: dict, loads: list[float] | None = None) -> list[str]:
    """Why a speed ratio between two runs with these records would not compare like with like.

    ours, peer: :func:`environment` records of the two sides; loads: every 1-minute load
    average sampled around the runs (the records' own are added). Reasons: threadpoolctl missing
    on a side (the BLAS in use is unknown), a kernel-forcing variable that differs, a BLAS or
    OpenMP library present on both sides with a different kernel or thread count, a load
    average above the core count.
    """
    reasons = []
    for who, rec in (("ours", ours), ("peer", peer)):
        if not rec.get("threadpoolctl"):
            reasons.append(f"{who}: threadpoolctl is not installed in {rec.get('executable')}, "
                           "so the BLAS library and kernel in use are unknown")
    for name in KERNEL_VARIABLES:
        a, b = ours["variables"].get(name), peer["variables"].get(name)
        if a != b:
            reasons.append(f"{name} differs: ours {a!r}, peer {b!r}")
    mine, theirs = _kernels(ours), _kernels(peer)
    for api in sorted(set(mine) & set(theirs), key=str):
        if mine[api] != theirs[api]:
            reasons.append(f"{api} kernel/threads differ: ours {sorted(mine[api], key=str)}, "
                           f"peer {sorted(theirs[api], key=str)}")
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
