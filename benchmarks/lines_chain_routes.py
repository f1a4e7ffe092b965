"""How far the line fit's own observation is from the observation chain's, at the same rv, vsini.

The line fit (``infer.lines.fit.ObservedLineModel``) evaluates the cloned lines at λ_obs / D(rv)
on a fine observed-frame grid (velocity step min(c/R/oversample, data step / 2)), rotates,
applies the Gaussian LSF and rebins onto the data. The chain (``infer.chain.ObservationChain``)
takes the clone as a ``LineForwardModel`` on a fixed rest-frame grid, rotates and applies the LSF
with one composed kernel, and Doppler-shifts by moving the rebin edges. Both are approximations
of the same integral; this script prints how far apart they are (and how far the line fit is
from itself at five times finer sampling) on TRES WASP-14 order 22 with the Adam clone of the
UVES Sun of ``lines_quick.py``, at that fit's rv and vsini, and the time of one forward + backward
pass (rv, vsini gradients) of each route. No tellurics, no continuum: the stellar part only.

    PYTHONPATH=src python benchmarks/lines_chain_routes.py --data ../shared/data [--out lines_quick]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lines_quick import TRES_SETTINGS, adam_clone
from photosphere.infer.chain import ObservationChain
from photosphere.infer.lines.fit import ObservedLineModel, observed_spectrum
from photosphere.io import read
from photosphere.models.lines.forward import LineForwardModel

#: rv and vsini (km/s) of the TRES fit in docs/lines.md (``lines_quick.py``).
RV, VSINI = -5.101195084204337, 3.753271359158728


def line_route(lines, spectrum, settings) -> tuple[ObservedLineModel, np.ndarray]:
    """The line fit's stellar flux on the data pixels, (n_pix,)."""
    model = ObservedLineModel(lines, spectrum.wavelength, settings, None, rv=RV)
    with torch.no_grad():
        model.log_vsini.fill_(math.log(VSINI))
        return model, model._observe(model._star()).numpy()


def chain_of(lines, spectrum, settings, fine: np.ndarray, step: float) -> ObservationChain:
    """The chain over the clone as a forward model on a ``step`` km/s grid spanning ``fine``."""
    template = LineForwardModel(lines, velocity_step=step, medium="air",
                                wavelength_range=(fine[0] / 1.001, fine[-1] * 1.001))
    return ObservationChain(template, spectrum, resolution=settings.resolution,
                            continuum_degree=None, epsilon=settings.epsilon,
                            rv_bounds=(-60.0, 60.0), vsini_bounds=(0.0, 20.0))


def chain_route(chain: ObservationChain) -> np.ndarray:
    theta = torch.tensor([1.0, VSINI, RV], dtype=torch.float64)
    with torch.no_grad():
        labels, vsini, rv = chain.split(theta)
        return chain.resampled(chain.broadened(labels, vsini), rv)[0].numpy()


def _difference(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a - b)
    return {"max": float(d.max()), "rms": float(np.sqrt(np.mean(d ** 2)))}


def _median_time(step, repeats: int = 7) -> float:
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the shared data folder")
    p.add_argument("--out", default="lines_quick", help="folder of lines_quick.py's Adam clone")
    args = p.parse_args()
    torch.set_num_threads(1)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = adam_clone(read(data / "optical" / "uves_sun_norm.txt"), out)
    spectrum = observed_spectrum(read(data / "tres" / "WASP14-2009-06-14.hdf5").order(22))
    model, line = line_route(lines, spectrum, TRES_SETTINGS)
    _, line_fine = line_route(lines, spectrum, dataclasses.replace(TRES_SETTINGS,
                                                                   oversample=25.0))
    fine = model.fine_wavelength.numpy()
    chain = chain_of(lines, spectrum, TRES_SETTINGS, fine, model.velocity_step)
    chain_fine = chain_route(chain_of(lines, spectrum, TRES_SETTINGS, fine,
                                      model.velocity_step / 5.0))
    report = {"velocity_step_kms": model.velocity_step, "n_fine": int(fine.size),
              "n_pixels": int(spectrum.wavelength.size),
              "line_vs_chain_same_step": _difference(line, chain_route(chain)),
              "line_vs_line_5x_finer": _difference(line, line_fine),
              "line_5x_finer_vs_chain_5x_finer": _difference(line_fine, chain_fine)}

    def line_pass():
        model.zero_grad()
        model._observe(model._star()).sum().backward()

    def chain_pass():
        theta = torch.tensor([1.0, VSINI, RV], dtype=torch.float64, requires_grad=True)
        labels, vsini, rv = chain.split(theta)
        chain.resampled(chain.broadened(labels, vsini), rv)[0].sum().backward()

    report["forward_backward_s"] = {"line_fit": _median_time(line_pass),
                                    "chain": _median_time(chain_pass)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
