"""CPU inference speed of the neural estimators on 8 × 4096 HARPS-N images (spectra per second).

Prints our figure for the CPU-preset ResNet (the network `photosphere nn train --preset cpu`
builds and the default model uses) with 1 and 2 threads, beside the target of the issue
(≥ 500 spectra/s for the ResNet on a CPU); the study itself reports no inference speed. The
attention network and the full-size (GPU preset) ResNet are timed for reference.

    PYTHONPATH=src python benchmarks/bench_nn.py [--n 2048] [--batch 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from photosphere.nn.attention import AttentionConfig, AttentionNet
from photosphere.nn.resnet import ResNet, ResNetConfig

TARGET = 500.0  # spectra/s, ResNet on a CPU (issue goal)


def spectra_per_second(model: torch.nn.Module, n: int, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(batch, 1, 8, 4096, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(x)  # warm-up (allocations, oneDNN kernels)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            model(x)
            done += batch
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="spectra per measurement")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    nets = {
        "ResNet (cpu preset)": ResNet(ResNetConfig.cpu()),
        "Attention (cpu preset)": AttentionNet(AttentionConfig.cpu()),
        "ResNet (full preset)": ResNet(ResNetConfig()),
    }
    print(f"CPU inference, 8 x 4096 images, batch {args.batch}, {args.n} spectra per run")
    print(f"{'network':<24} {'params':>9} {'1 thread':>12} {'2 threads':>12}   target")
    for name, net in nets.items():
        n_par = sum(p.numel() for p in net.parameters())
        n = args.n if "full" not in name else max(args.batch, args.n // 8)
        r1 = spectra_per_second(net, n, args.batch, 1)
        r2 = spectra_per_second(net, n, args.batch, 2)
        target = f">= {TARGET:.0f}/s" if name.startswith("ResNet (cpu") else "-"
        print(f"{name:<24} {n_par:>9,d} {r1:>10.0f}/s {r2:>10.0f}/s   {target}")
    print("peer (Hüttel & Clemmensen 2021): no inference speed reported")


if __name__ == "__main__":
    main()
