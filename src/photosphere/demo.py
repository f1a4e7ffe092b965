"""``photosphere demo``: the whole pipeline end to end on data the package makes itself.

1. Truth: Turbospectrum (ATLAS9 atmosphere interpolated to the labels, Gaia-ESO line list)
   synthesises the star at off-node labels over 5045-5355 Å, sampled at 0.25 km/s.
   The fitting model never sees this spectrum: it is not one of the grid's nodes.
2. Observation: a HARPS-N-like three-order echelle observation (5140-5290 Å): rotation, Gaussian
   LSF (R = 115 000), Doppler shift, flux-conserving rebinning onto the order layout, blaze
   slant, noise at S/N 150 (photosphere.ops).
3. Files: the truth as a FITS table, the observation in the TRES/Starfish echelle HDF5 layout,
   both read back by the readers.
4. Measurement: S/N (DER_SNR), the continuum (upper envelope), and a least-squares fit of
   (Teff, log g, [Fe/H], vsini, RV, continuum per order) with the EMBEDDED default grid
   (702 nodes, Teff step 250 K, log g 0.5, [Fe/H] 0.5; multilinear interpolation) through the
   observation chain, printing recovered vs true labels. Plots of every step go to the output
   folder.
5. Model comparison: a two-component (starspot) photosphere fitted to the same observation and
   weighed against the single star by BIC; the star was simulated without spots.
6. Neural estimate: the same star observed on the full HARPS-N 8-order layout (5050-5350 Å),
   read by the shipped default network (photosphere.nn) with its σ and the grid-consistency
   (out-of-distribution) check.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRUTH = {"teff": 5830.0, "logg": 4.32, "feh": -0.18, "vsini": 3.5, "rv": 18.3}
RESOLUTION = 115_000.0
SNR = 150.0
#: first pixel of the first order and last pixel of the last one, Å (air)
ORDERS_RANGE = (5140.0, 5290.0)
ORDER_NUMBERS = (119, 118, 117)  # HARPS-N orders near 5140-5290 Å
#: sampling of the truth spectrum, km/s (four times finer than the grid's 1 km/s)
TRUTH_VELOCITY_STEP = 0.25
#: what Turbospectrum synthesises, Å (air): the fit's orders and the network's 8-order layout
#: (5050.9-5349.1 Å) with room for rv (18 km/s = 0.3 Å), broadening and rebinning edges
SYNTHESIS_RANGE = (5045.0, 5355.0)


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and found; ``summary()`` is its JSON form."""

    output_dir: Path
    truth: dict[str, float]
    fitted: dict[str, tuple[float, float]]
    chi2_reduced: float
    snr_injected: float
    snr_estimated: float
    model: str
    files: dict[str, str]
    seconds: dict[str, float]
    comparison: dict[str, Any]
    neural: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "truth": self.truth,
            "labels": {k: {"value": v, "sigma": s} for k, (v, s) in self.fitted.items()},
            "chi2_reduced": self.chi2_reduced,
            "snr_injected": self.snr_injected,
            "snr_estimated": self.snr_estimated,
            "model": self.model,
            "files": self.files,
            "seconds": self.seconds,
            "spots_vs_single": self.comparison,
            "neural": self.neural,
        }


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr)


def require_synthesis() -> None:
    """Raise DependencyError naming ``photosphere setup`` when Turbospectrum is not built."""
    from .errors import DependencyError
    from .grids.synth.build import find_installation

    if find_installation() is None:
        raise DependencyError("photosphere demo synthesises its star with Turbospectrum, which "
                              "is not built here; run `photosphere setup` (compiles it with "
                              "gfortran and fetches the model atmospheres, a few minutes), then "
                              "`photosphere demo` again")


def read_truth(path: Path):
    """The truth spectrum stored at ``path`` by an earlier run, or None when there is none or
    it spans less than SYNTHESIS_RANGE (a file from an older demo)."""
    if not path.exists():
        return None
    from .io import read

    truth = read(path)
    wave = truth.wavelength
    covers = wave[0] <= SYNTHESIS_RANGE[0] + 0.01 and wave[-1] >= SYNTHESIS_RANGE[1] - 0.01
    return truth if covers else None


def synthesize_truth(path: Path):
    """The true star's normalised spectrum at TRUTH_VELOCITY_STEP over SYNTHESIS_RANGE.

    Synthesised once with Turbospectrum and written to ``path`` (FITS table); later runs read it
    back (a file from an older demo that covers less is synthesised again). Returns the Spectrum
    as read from the file.
    """
    cached = read_truth(path)
    if cached is not None:
        return cached
    from .grids._sampling import log_uniform_wavelength, rebin
    from .grids.synth.turbospectrum import synthesize
    from .io import read
    from .io.writers import write_fits_table
    from .spectrum import Spectrum, SpectrumMeta

    lo, hi = SYNTHESIS_RANGE
    syn = synthesize(TRUTH["teff"], TRUTH["logg"], TRUTH["feh"], 0.0, 1.0,
                     wavelength_min=lo - 0.5, wavelength_max=hi + 0.5)
    wave = log_uniform_wavelength(lo, hi, TRUTH_VELOCITY_STEP)
    absolute = rebin(syn.wavelength, syn.flux_absolute, wave)
    continuum = rebin(syn.wavelength, syn.continuum, wave)
    meta = SpectrumMeta(object_name="demo star (Turbospectrum + interpolated ATLAS9)",
                        instrument=syn.provenance["code"])
    write_fits_table(Spectrum(wave, absolute / continuum, medium="air", meta=meta,
                              flux_unit="normalized"), path)
    return read(path)


def simulate_observation(truth, wavelength: np.ndarray, seed: int,
                         order_numbers: list[int] | None = None):
    """A noisy echelle observation of the truth spectrum; returns (spectrum, clean counts).

    truth: the normalised rest-frame Spectrum on a log-uniform grid (TRUTH_VELOCITY_STEP km/s);
    wavelength: (n_orders, n_pixels) Å of the orders. Rotation (vsini), LSF (RESOLUTION), Doppler
    shift (rv) and rebinning onto each order through photosphere.ops, then a blaze slant and
    Poisson-like noise at SNR.
    """
    import torch

    from .ops.doppler import shift_wavelength
    from .ops.lsf import gaussian_broaden
    from .ops.noise import add_noise
    from .ops.resample import rebin
    from .ops.rotation import rotational_broaden
    from .spectrum import EchelleSpectrum, SpectrumMeta

    flux = torch.as_tensor(np.array(truth.flux, float))
    flux = rotational_broaden(flux, torch.tensor(TRUTH["vsini"]), TRUTH_VELOCITY_STEP)
    flux = gaussian_broaden(flux, RESOLUTION, TRUTH_VELOCITY_STEP)
    shifted = shift_wavelength(torch.as_tensor(np.array(truth.wavelength, float)),
                               torch.tensor(TRUTH["rv"], dtype=torch.float64))
    wavelength = np.array(wavelength, dtype=float)  # a writable copy for torch
    clean = np.stack([rebin(shifted, flux, torch.as_tensor(w)).numpy() for w in wavelength])
    # a blaze-like linear slant per order, as in the HARPS-N 2D pipeline signal
    x = np.linspace(-1.0, 1.0, wavelength.shape[1])
    slant = np.stack([1.0 + s * x for s in np.resize([0.08, -0.05, 0.03], len(wavelength))])
    continuum = 1000.0 * slant
    rng = np.random.default_rng(seed)
    noisy, sigma = add_noise(clean * continuum, SNR, rng=rng, continuum=continuum)
    meta = SpectrumMeta(object_name="demo star", instrument="HARPS-N-like (simulated)", snr=SNR)
    spec = EchelleSpectrum(wavelength, noisy, sigma, medium="air", meta=meta,
                           flux_unit="counts", order_numbers=order_numbers)
    return spec, clean * continuum


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``seconds[stage]``."""
    t0 = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - t0


def _truth(truth_path: Path, cached):
    """Stage 1: the synthesised star (``cached`` when an earlier run left it)."""
    if cached is not None:
        _log(f"1/6 reusing the synthesised star {truth_path}")
        return cached
    _log("1/6 synthesising the star with Turbospectrum (Teff {teff:.0f} K, log g {logg}, "
         "[Fe/H] {feh}; ATLAS9 interpolated; {lo:.0f}-{hi:.0f} Å); rerunning reuses it"
         .format(**TRUTH, lo=SYNTHESIS_RANGE[0], hi=SYNTHESIS_RANGE[1]))
    return synthesize_truth(truth_path)


def _observation(truth, seed: int):
    """Stage 2: the star seen through a HARPS-N-like echelle layout (an EchelleSpectrum)."""
    from .ops.echelle import OrderLayout

    _log(f"2/6 simulating a HARPS-N-like observation (R={RESOLUTION:.0f}, "
         f"{len(ORDER_NUMBERS)} orders, S/N {SNR:.0f})")
    layout = OrderLayout.from_instrument(*ORDERS_RANGE, n_orders=len(ORDER_NUMBERS),
                                         overlap=0.1, resolving_power=RESOLUTION, sampling=3.3,
                                         medium="air", name="HARPS-N-like 5140-5290 Å",
                                         order_numbers=list(ORDER_NUMBERS))
    observed, _ = simulate_observation(truth, layout.wavelength, seed, layout.order_numbers)
    return observed


def _round_trip(observed, out: Path):
    """Stage 3: the observation written as a TRES-layout HDF5 file and read back: the file,
    the spectrum read, its DER_SNR S/N and its upper-envelope normalisation."""
    from .io import read
    from .io.writers import write_echelle_hdf5
    from .ops.continuum import normalize_upper_envelope
    from .ops.noise import estimate_snr

    _log("3/6 writing and reading back the observation (TRES-layout echelle HDF5)")
    echelle_file = write_echelle_hdf5(observed, out / "demo-observation.hdf5")
    spec = read(echelle_file)
    if not np.allclose(spec.flux, observed.flux):
        raise RuntimeError("demo: the observation read back differs from what was written")
    return echelle_file, spec, float(np.median(estimate_snr(spec.flux))), \
        normalize_upper_envelope(spec)


def _network_guess(truth, seed: int) -> dict[str, Any]:
    """Stage 6: the shipped network's labels of the star on its own 8-order layout."""
    from .nn.predict import load_model, predict_spectrum

    _log("6/6 the shipped neural network on the same star observed on the full HARPS-N 8-order "
         "layout (5050-5350 Å)")
    network = load_model()
    image, _ = simulate_observation(truth, np.asarray(network.data["layout_wavelength"]),
                                    seed + 1)
    guess = predict_spectrum(image, network, rv=TRUTH["rv"])
    return {"model": str(network.path),
            "labels": {k: {"value": v, "sigma": s} for k, (v, s) in guess.labels.items()},
            "consistency": guess.provenance["consistency"],
            "sigma_systematic": guess.provenance.get("sigma_systematic"),
            "real_stars": len((network.data.get("real_star_calibration") or {})
                              .get("stars", []))}


def run_demo(output_dir: str | Path = "photosphere-demo", *, seed: int = 42) -> DemoResult:
    """Run every stage, write files and plots into ``output_dir``; returns a DemoResult."""
    from .grids.interpolate import GridInterpolator
    from .grids.presets import require_default_grid
    from .infer.mixture import fit_mixture, make_model
    from .infer.optimize import fit

    out = Path(output_dir)
    grid_path = require_default_grid()
    truth_path = out / "demo-truth.fits"
    cached = read_truth(truth_path)
    if cached is None:
        require_synthesis()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    with _timed(seconds, "synthesis"):
        truth = _truth(truth_path, cached)
    with _timed(seconds, "observation"):
        observed = _observation(truth, seed)
    with _timed(seconds, "files"):
        echelle_file, spec, snr_est, normalised = _round_trip(observed, out)
    with _timed(seconds, "fit"):
        _log("4/6 fitting Teff, log g, [Fe/H], vsini, RV and a continuum per order with the "
             "embedded default grid")
        model = GridInterpolator(grid_path)
        result = fit(model, spec, resolution=RESOLUTION, source=str(echelle_file))
    with _timed(seconds, "spot model"):
        _log("5/6 is the star spotted? fitting a two-component (spot) photosphere and "
             "comparing it with the single star (BIC)")
        spots = fit_mixture(make_model("spots", model), spec, resolution=RESOLUTION,
                            single=result, source=str(echelle_file))
        comparison = spots.compare()
    with _timed(seconds, "neural network"):
        neural = _network_guess(truth, seed)
    result.to_json(out / "demo-result.json")
    result.plot(out / "demo-fit.png")
    _plot_overview(out / "demo-overview.png", truth, spec, normalised)

    fitted = {k: result.labels[k] for k in TRUTH if k in result.labels}
    files = {"truth": str(truth_path), "observation": str(echelle_file),
             "result": str(out / "demo-result.json"), "fit_plot": str(out / "demo-fit.png"),
             "overview_plot": str(out / "demo-overview.png")}
    return DemoResult(out, dict(TRUTH), fitted, float(result.chi2_reduced), SNR, snr_est,
                      f"embedded default grid {grid_path.name} (multilinear interpolation)",
                      files, seconds,
                      {**comparison.to_dict(), "verdict": comparison.verdict()}, neural)


def _plot_overview(path: Path, truth, spec, normalised) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), constrained_layout=True)
    axes[0].plot(truth.wavelength, truth.flux, lw=0.5, color="k")
    axes[0].set_title("the star: Turbospectrum at the true labels (rest frame, unbroadened)")
    axes[0].set_ylabel("normalised flux")
    for i in range(spec.n_orders):
        label = f"order {int(spec.order_numbers[i])}"
        axes[1].plot(spec.wavelength[i], spec.flux[i], lw=0.5, label=label)
        axes[2].plot(normalised.wavelength[i], normalised.flux[i], lw=0.5)
    axes[1].set_title("simulated echelle observation read back from HDF5 (counts, blaze slant)")
    axes[1].set_ylabel("counts")
    axes[1].legend(loc="lower right")
    axes[2].set_title("continuum-normalised (sigma-clipped upper envelope per order)")
    axes[2].set_ylabel("normalised flux")
    axes[2].set_xlabel("air wavelength (Å)")
    for ax in axes:
        ax.axvline(5172.684, color="tab:red", lw=0.5, ls=":")
        ax.axvline(5183.604, color="tab:red", lw=0.5, ls=":")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_summary(result: DemoResult) -> str:
    """Recovered vs true labels as a small table."""
    units = {"teff": "K", "logg": "dex", "feh": "dex", "vsini": "km/s", "rv": "km/s"}
    decimals = {"teff": 1, "logg": 3, "feh": 3, "vsini": 3, "rv": 3}
    lines = [f"{'label':8s}{'true':>10s}{'fitted':>12s}{'± 1σ':>10s}{'fit-true':>10s}"
             f"{'(fit-true)/σ':>14s}"]
    for name, true in result.truth.items():
        value, sigma = result.fitted.get(name, (float("nan"), float("nan")))
        pull = (value - true) / sigma if sigma and np.isfinite(sigma) and sigma > 0 else np.nan
        d = decimals[name]
        lines.append(f"{name:8s}{true:10.{d}f}{value:12.{d}f}{sigma:10.{d}f}"
                     f"{value - true:10.{d}f}{pull:14.1f}  {units[name]}")
    lines.append(f"reduced chi2: {result.chi2_reduced:.3f}; S/N injected {result.snr_injected:.0f} "
                 f"(continuum), DER_SNR from the data {result.snr_estimated:.0f} (resolved lines "
                 "add to its noise term, so it reads low)")
    lines.append(f"model: {result.model}. The 1σ include the grid's interpolation error "
                 "(marginalised, model_error='auto'): the grid interpolated between nodes "
                 "250 K and 0.5 dex apart vs the star synthesised at its own labels")
    c = result.comparison
    lines.append(f"spotted star vs single star: delta BIC {c['delta_bic']:+.1f} "
                 f"(positive favours spots): {c['verdict']} (simulated without spots)")
    nn = result.neural
    got = ", ".join(f"{k} {v['value']:.{decimals[k]}f} ± {v['sigma']:.{decimals[k]}f}"
                    for k, v in nn["labels"].items())
    check = nn["consistency"]
    verdict = (f"grid mismatch {check['mismatch_rms']:.3f} of the continuum, "
               + ("OUT OF DISTRIBUTION" if check["out_of_distribution"] else "in distribution")
               if check.get("checked") else f"grid check skipped: {check.get('reason')}")
    floor = nn.get("sigma_systematic")
    note = (f" (σ include σ_sys {', '.join(f'{k} {v:.3g}' for k, v in floor.items())}, "
            f"measured on {nn['real_stars']} real stars)" if floor else "")
    lines.append(f"neural network ({Path(nn['model']).name}, 8 orders 5050-5350 Å): {got}"
                 f"{note}; {verdict}")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    lines.append("files: " + ", ".join(result.files.values()))
    return "\n".join(lines)
