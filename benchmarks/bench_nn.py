"""CPU inference speed of the neural estimators (spectra per second), each on its own layout
(8 × 4096 HARPS-N images, 26 × 1024 for the optical windows).

Prints our figure for the shipped default model or ``--model`` (a trained CPU-preset ResNet,
timed through ``predict_images``: input checks, network, Gaussian → physical μ and Σ with the σ
calibration) and for the bare CPU-preset network, with 1 and 2 threads, beside the target of
the issue (≥ 500 spectra/s for the ResNet on a CPU); the study itself reports no inference speed.
The attention network and the full-size (GPU preset) ResNet are timed for reference. The load
average, BLAS libraries (threadpoolctl), thread variables and torch's threads are printed
beside the figures (the development machine is shared).

    PYTHONPATH=src python benchmarks/bench_nn.py [--n 2048] [--batch 128] [--model M.pt]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _shared import describe, environment
from photosphere.nn.attention import AttentionConfig, AttentionNet
from photosphere.nn.evaluate import predict_images
from photosphere.nn.predict import default_model_path, load_model
from photosphere.nn.resnet import ResNet, ResNetConfig

TARGET = 500.0  # spectra/s, ResNet on a CPU (issue goal)


def spectra_per_second(run, n: int, batch: int, threads: int,
                       shape: tuple[int, int] = (8, 4096)) -> float:
    """``run(x)`` on (batch, 1, *shape) images until ``n`` spectra are done -> spectra/s."""
    torch.set_num_threads(threads)
    x = 1 - 0.3 * torch.rand(batch, 1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        run(x)  # warm-up (allocations, oneDNN kernels)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            run(x)
            done += batch
        return done / (time.perf_counter() - t0)


def _net(model: torch.nn.Module):
    model.eval()
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="spectra per measurement")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", help="checkpoint or shipped name (default: the default model)")
    args = ap.parse_args()
    torch.manual_seed(0)
    runs = {}
    if args.model or default_model_path().exists():
        ck = load_model(args.model)
        shape = tuple(int(v) for v in torch.as_tensor(ck.data["layout_wavelength"]).shape)
        runs[f"{args.model or 'default'} model"] = (
            sum(p.numel() for p in ck.model.parameters()), shape,
            lambda x: predict_images(ck.model, ck.label_scaling, x, temperature=ck.temperature,
                                     batch_size=args.batch))
    for name, net in {"ResNet (cpu preset)": ResNet(ResNetConfig.cpu()),
                      "Attention (cpu preset)": AttentionNet(AttentionConfig.cpu()),
                      "ResNet (full preset)": ResNet(ResNetConfig())}.items():
        runs[name] = (sum(p.numel() for p in net.parameters()), (8, 4096), _net(net))
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"CPU inference, batch {args.batch}, {args.n} spectra per run; "
          f"load average (1/5/15 min) {load}")
    print(f"environment: {describe(environment())}")
    print(f"{'network':<26} {'image':>10} {'params':>9} {'1 thread':>12} {'2 threads':>12}   "
          "target")
    for name, (n_par, shape, run) in runs.items():
        n = args.n if "full" not in name else max(args.batch, args.n // 8)
        r1 = spectra_per_second(run, n, args.batch, 1, shape)
        r2 = spectra_per_second(run, n, args.batch, 2, shape)
        target = f">= {TARGET:.0f}/s" if "Attention" not in name and "full" not in name else "-"
        size = f"{shape[0]}x{shape[1]}"
        print(f"{name:<26} {size:>10} {n_par:>9,d} {r1:>10.0f}/s {r2:>10.0f}/s   {target}")
    print(f"load average after: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("peer (Hüttel & Clemmensen 2021): no inference speed reported")


if __name__ == "__main__":
    main()
