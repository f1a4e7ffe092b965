"""Where a neural model's [Fe/H] for the real Sun goes wrong: the synthetic gap, dissected.

For each model: its labels for the UVES Sun (as ``photosphere nn predict`` formats it), for a
noise-free synthetic Sun simulated from the embedded grid at (5772, 4.44, 0.0, 2 km/s) on the
same layout (also with the Sun's macroturbulence, ζ_RT 4.8 km/s), and for hybrids: the real
image with the grid's flux put back wherever the real Sun is brighter (lines the grid makes too
deep), the real image with the grid's flux put back where it is darker (absorption the grid
lacks), and the synthetic Sun veiled by 20 % (every line shallower alike). Then the depth ratio
real/synthetic (ζ-broadened) over the grid's lines deeper than 0.1.

    PYTHONPATH=src PHOTOSPHERE_SHARED_DATA=../shared/data python benchmarks/nn_sun_gap.py \\
        [--model default] [--model snr20 ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _shared import SHARED
from photosphere.grids.presets import default_grid_path
from photosphere.io import read
from photosphere.nn.augment import veil
from photosphere.nn.data import EchelleSimulator, StoredLayout, normalise_orders
from photosphere.nn.evaluate import predict_images
from photosphere.nn.inputs import prepare_image
from photosphere.nn.predict import load_model
from photosphere.nn.train import source_from_grid

SUN = (5772.0, 4.44, 0.0, 2.0)
SUN_ZETA = 4.8  # km/s, radial-tangential ζ of the UVES Sun (`photosphere grid validate-sun`)


def images(ck) -> dict[str, torch.Tensor]:
    """Real and synthetic solar images (n_orders, n_pixels) on the model's layout, and hybrids."""
    layout = StoredLayout.of(ck)
    real = prepare_image(read(SHARED / "optical" / "uves_sun_norm.txt"), layout.wavelength,
                         layout.medium).image
    real = torch.as_tensor(np.asarray(real), dtype=torch.float32).reshape(layout.wavelength.shape)
    sim = EchelleSimulator(source_from_grid(default_grid_path(), ck.data.get("line_strengths")),
                           layout)
    clean = sim.images(torch.tensor([SUN]))
    syn = normalise_orders(clean)[0]
    broad = normalise_orders(sim.images(torch.tensor([SUN]),
                                        macroturbulence=torch.tensor([SUN_ZETA])))[0]
    return {"UVES Sun": real, "synthetic Sun": syn,
            f"synthetic Sun, ζ {SUN_ZETA} km/s": broad,
            "real, grid flux where real is brighter": torch.minimum(real, syn),
            "real, grid flux where real is darker": torch.maximum(real, syn),
            "synthetic Sun veiled 20 %": normalise_orders(veil(clean, torch.tensor([0.2])))[0]}


def depth_ratios(real: np.ndarray, syn: np.ndarray) -> np.ndarray:
    """log(real depth / grid depth) at the grid's line minima deeper than 0.1 (real: the
    deepest pixel within ± 3 px)."""
    out = []
    for r, s in zip(real, syn, strict=True):
        inner = s[1:-1]
        minima = np.flatnonzero((inner < s[:-2]) & (inner <= s[2:])) + 1
        minima = minima[(1 - s[minima] > 0.1) & (1 - s[minima] < 0.9)]
        for i in minima:
            depth = 1 - r[max(i - 3, 0):i + 4].min()
            out.append(np.log(max(depth, 1e-3) / (1 - s[i])))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="checkpoint or shipped model name")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.model or ["default"]:
        ck = load_model(name)
        ims = images(ck)
        x = torch.stack(list(ims.values())).unsqueeze(1)
        mu, cov = predict_images(ck.model, ck.label_scaling, x, temperature=ck.temperature)
        sigma = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        print(f"model {name}: labels (calibrated σ); truth Teff 5772, log g 4.44, [Fe/H] 0.00")
        for label, m, s in zip(ims, mu.tolist(), sigma.tolist(), strict=True):
            print(f"  {label:40s} Teff {m[0]:6.0f} ± {s[0]:4.0f}  log g {m[1]:5.2f} ± {s[1]:.2f}"
                  f"  [Fe/H] {m[2]:+.3f} ± {s[2]:.3f}  vsini {m[3]:4.1f} ± {s[3]:.1f}")
        # against the synthetic Sun broadened like the real one (without ζ the real lines look
        # 20 % shallower from the broadening alone)
        broad = ims[f"synthetic Sun, ζ {SUN_ZETA} km/s"]
        ratios = depth_ratios(ims["UVES Sun"].numpy(), broad.numpy())
        mad = 1.4826 * np.median(np.abs(ratios - np.median(ratios)))
        p5, p25 = np.percentile(ratios, [5, 25])
        print(f"depth ratio real/grid over {len(ratios)} grid lines deeper than 0.1: median "
              f"{np.exp(np.median(ratios)):.2f}, robust σ of the log {mad:.2f}, 25th percentile "
              f"{np.exp(p25):.2f}, 5th percentile {np.exp(p5):.2f}")


if __name__ == "__main__":
    main()
