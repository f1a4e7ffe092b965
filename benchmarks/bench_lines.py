"""Line-by-line model: per-epoch cost and time to convergence, ours vs blasé side by side.

Usage:
    PYTHONPATH=src python benchmarks/bench_lines.py [--threads 2] [--lines 9000] [--pixels 60000]
        [--peer-python /work/peers/blase/bin/python] [--peer-window 1000]
        [--sun /path/uves_sun_norm.txt --sun-min 5000 --sun-max 5600 --optimizer adam|lm]

1. Per-epoch cost (forward + backward of χ² + one Adam step) for N lines on a P-pixel 0.01 Å
   grid: ours (pseudo-Voigt with automatic per-line windows, ±1 Å, ±5 Å; exact Voigt) and the
   peer, blasé (Gully-Santiago & Morley 2022), on the SAME lines and pixels in the same run:
   its ``SparseLinearEmulator`` (window ``--peer-window`` px, its default 1000) built from our
   line list (``init_state_dict``) and timed through its own ``optimize`` loop (Adam). The peer
   runs in its own Python environment (``--peer-python``; make one outside the repository, e.g.
   ``python -m venv /work/peers/blase`` + ``pip install --no-deps`` of a fetched
   github.com/gully/blase); when that environment or ``import blase`` is missing, the peer is
   skipped with a message. The dense lines × pixels sum on a subset gives the scale. Both sides
   run on ``--threads`` threads (torch, and numpy's BLAS) and record the BLAS kernel, thread and
   kernel variables and load average (benchmarks/_shared.py); the ratios are printed only when
   those agree and the load stayed at or below the core count, else the reasons are printed.
2. Time to convergence of a clone of a real spectrum (UVES Sun by default), Levenberg–Marquardt
   (``--optimizer lm``) or Adam; converged = an LM iteration lowers the loss by < 0.1 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _shared import describe, environment, print_ratio, ratio_refusals, thread_env
from photosphere.io import read
from photosphere.models.lines.clone import clone_spectrum, optimise
from photosphere.models.lines.model import LineModel, dense_opacity

QUOTED = [
    ("blasé, paper: 1000 epochs, 9028 lines, RTX 2070 GPU", "56 s total (0.056 s/epoch)"),
    ("blasé, paper: 1000 epochs, 9028 lines, M1 laptop CPU", "≈ 85 min (≈ 5.1 s/epoch)"),
]

# Runs inside the peer's environment: builds blasé's sparse emulator from our line list and
# times its own training loop. argv: input .npz, threads, epochs, window (px), benchmarks dir.
PEER_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from blase.emulator import SparseLinearEmulator
data = np.load(sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
epochs, window = int(sys.argv[3]), int(sys.argv[4])
state = {k: torch.as_tensor(data[k]) for k in
         ("lam_centers", "amplitudes", "sigma_widths", "gamma_widths")}
emulator = SparseLinearEmulator(data["wavelength"], data["flux"], device="cpu",
                                wing_cut_pixels=window, init_state_dict=state)
emulator.optimize(epochs=1, LR=0.01, verbose=False)  # warm-up
t0, c0 = time.perf_counter(), time.process_time()
emulator.optimize(epochs=epochs, LR=0.01, verbose=False)
sys.path.insert(0, sys.argv[5])
from _shared import environment
print(json.dumps({"environment": environment(), "wall": (time.perf_counter() - t0) / epochs,
                  "cpu": (time.process_time() - c0) / epochs,
                  "n_lines": int(emulator.n_lines), "n_pix": int(emulator.n_pix),
                  "torch": torch.__version__}))
"""


def epoch_seconds(model: LineModel, wave: torch.Tensor, target: torch.Tensor,
                  epochs: int = 5) -> tuple[float, float]:
    """Wall and CPU time (s) per epoch (forward + backward of the χ² + one Adam step) over
    ``epochs`` epochs after one warm-up epoch; CPU time is summed over threads."""

    def loss_fn():
        return torch.sum((model(wave) - target) ** 2)

    optimise(loss_fn, model, optimizer="adam", n_steps=1, progress=False)
    t0, c0 = time.perf_counter(), time.process_time()
    optimise(loss_fn, model, optimizer="adam", n_steps=epochs, progress=False)
    return (time.perf_counter() - t0) / epochs, (time.process_time() - c0) / epochs


def peer_epoch(peer_python: str, wave: np.ndarray, target: np.ndarray, params, *,
               threads: int, epochs: int, window: int) -> dict | None:
    """blasé's per-epoch wall and CPU time on the same lines and pixels, or None (with a
    message) when its environment is absent."""
    if not Path(peer_python).exists():
        print(f"   peer  blasé SKIPPED: no peer environment at {peer_python} (make one outside "
              "the repository: python -m venv /work/peers/blase; pip install --no-deps a fetched "
              "github.com/gully/blase)")
        return None
    centre, amplitude, sigma, gamma = params
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.npz"
        np.savez(path, wavelength=wave, flux=target, lam_centers=centre,
                 amplitudes=np.log(amplitude), sigma_widths=np.log(sigma),
                 gamma_widths=np.log(gamma))
        load_before = os.getloadavg()[0]
        run = subprocess.run([peer_python, "-c", PEER_SCRIPT, str(path), str(threads),
                              str(epochs), str(window), str(Path(__file__).resolve().parent)],
                             capture_output=True, text=True, cwd=tmp,
                             env=thread_env(threads, {**os.environ, "PYTHONPATH": ""}))
    if run.returncode != 0:
        print(f"   peer  blasé SKIPPED: it failed in {peer_python}: "
              f"{run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
        return None
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["load_before"] = load_before
    return out


def bench_epoch(n_lines: int, n_pixels: int, peer_python: str, peer_windows: list[int],
                peer_epochs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    wave = torch.as_tensor(5000.0 + 0.01 * np.arange(n_pixels))
    lo, hi = float(wave[0]) + 1, float(wave[-1]) - 1
    params = (np.sort(rng.uniform(lo, hi, n_lines)), rng.uniform(0.001, 0.05, n_lines),
              rng.uniform(0.02, 0.06, n_lines), rng.uniform(0.003, 0.03, n_lines))
    truth = LineModel(*params, half_window=2.0, pair_dtype=torch.float64)
    with torch.no_grad():  # the target: the same lines, ±2 Å windows
        target = truth(wave)
    load_start = os.getloadavg()[0]
    print(f"\n1. per-epoch cost (forward + backward + Adam step), {n_lines} lines on {n_pixels} "
          f"px (0.01 Å), {torch.get_num_threads()} thread(s)")
    cases = [("pseudo_voigt", None), ("pseudo_voigt", 1.0), ("pseudo_voigt", 5.0),
             ("voigt", None)]  # the exact Voigt at ±5 Å needs ~10 GB for autograd
    for profile, half in cases:
        model = LineModel(*params, profile=profile, half_window=half)
        pairs = int(sum(np.minimum(2 * model.half_window.numpy() / 0.01 + 1, n_pixels)))
        wall, cpu = epoch_seconds(model, wave, target, epochs=3 if half == 5.0 else 5)
        label = "auto" if half is None else f"±{half} Å"
        print(f"   ours  {profile:12s} window {label:8s} ({pairs / n_lines:6.0f} px/line): "
              f"{wall * 1000:8.1f} ms/epoch wall, {cpu * 1000:8.1f} ms CPU", flush=True)
        if profile == "pseudo_voigt" and half is None:
            ours = (wall, cpu)
    sub = 500
    m = LineModel(*(p[:sub] for p in params))
    t0 = time.perf_counter()
    tau = dense_opacity(wave, m.centre, m.amplitude, m.sigma, m.gamma)
    torch.sum((torch.exp(-tau) - target) ** 2).backward()
    dense = (time.perf_counter() - t0) * n_lines / sub
    print(f"   dense lines × pixels sum (extrapolated from {sub} lines): {dense:8.1f} s/epoch")
    ours_env = environment()
    ours_env["load_average_1min"] = max(ours_env["load_average_1min"], load_start)
    for window in peer_windows:
        peer = peer_epoch(peer_python, wave.numpy(), target.numpy(), params,
                          threads=torch.get_num_threads(), epochs=peer_epochs, window=window)
        if peer is None:
            break
        print(f"   peer  blasé SparseLinearEmulator window {window} px ({peer['n_lines']} lines, "
              f"torch {peer['torch']}): {peer['wall'] * 1000:8.1f} ms/epoch wall, "
              f"{peer['cpu'] * 1000:8.1f} ms CPU", flush=True)
        print(f"   ours: {describe(ours_env)}\n   peer: {describe(peer['environment'])}")
        reasons = ratio_refusals(ours_env, peer["environment"],
                                 [peer["load_before"], os.getloadavg()[0]])
        print_ratio("   blasé / ours (auto windows) per epoch, wall", peer["wall"] / ours[0],
                    reasons)
        print_ratio("   blasé / ours (auto windows) per epoch, CPU", peer["cpu"] / ours[1],
                    reasons)
    for label, value in QUOTED:
        print(f"   peer  [QUOTED from the paper, not run here] {label}: {value}")


def bench_clone(path: str, wmin: float, wmax: float, steps: int, rounds: int,
                prominence: float, optimizer: str) -> None:
    spectrum = read(path).slice(wmin, wmax)
    wave, flux = spectrum.wavelength, spectrum.flux
    what = ("Levenberg–Marquardt iterations (at most; until a step gains < 0.1 %)"
            if optimizer == "lm" else "Adam epochs")
    print(f"\n2. clone of {os.path.basename(path)} {wmin}-{wmax} Å ({wave.size} px), "
          f"{rounds} rounds × {steps} {what}, prominence {prominence}")
    cpu0 = time.process_time()
    result = clone_spectrum(wave, flux, prominence=prominence, n_steps=steps, n_rounds=rounds,
                            optimizer=optimizer, progress=False)
    cpu = time.process_time() - cpu0
    f = result.final
    last = np.asarray(result.history[-11:])
    change = (last[0] - last[-1]) / last[0]
    print(f"   convergence: the loss fell by {100 * change:.2f} % over the last 10 steps")
    print(f"   ours: {result.model.n_lines} lines, {result.seconds:.1f} s wall "
          f"({cpu:.1f} s CPU over all threads), "
          f"{len(result.history)} {optimizer} steps; residual per pixel "
          f"median |r| {f.median_abs:.4f}, rms {f.rms:.4f}, p95 {f.p95_abs:.4f}, max "
          f"{f.max_abs:.4f}")
    print("   peer [QUOTED from the paper]: blasé clone residual ≈ 1.2 %, 1000 Adam epochs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lines", type=int, default=9000)
    p.add_argument("--pixels", type=int, default=60000)
    p.add_argument("--sun", default=None, help="normalised spectrum for the clone benchmark")
    p.add_argument("--sun-min", type=float, default=5000.0)
    p.add_argument("--sun-max", type=float, default=5600.0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prominence", type=float, default=0.002)
    p.add_argument("--optimizer", choices=["adam", "lm"], default="adam")
    p.add_argument("--peer-python", default="/work/peers/blase/bin/python",
                   help="python of an environment where `import blase` works")
    p.add_argument("--peer-window", type=int, nargs="+", default=[1000],
                   help="blasé wing_cut_pixels to time (its default 1000)")
    p.add_argument("--peer-epochs", type=int, default=3)
    p.add_argument("--skip-epoch", action="store_true", help="only the clone benchmark")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:   # numpy's BLAS on the same thread count as torch (the peer gets it by variables)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if not args.skip_epoch:
        bench_epoch(args.lines, args.pixels, args.peer_python, args.peer_window,
                    args.peer_epochs)
    if args.sun:
        bench_clone(args.sun, args.sun_min, args.sun_max, args.steps, args.rounds,
                    args.prominence, args.optimizer)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
