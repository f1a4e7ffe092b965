"""The observation chain against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analytic_model import AnalyticModel, simulate
from photosphere import EchelleSpectrum, Spectrum
from photosphere.errors import FitError, InvalidSpectrumError, OutOfGridError
from photosphere.infer.chain import ObservationChain, chebyshev_basis
from photosphere.ops import lsf, resample, rotation
from photosphere.ops.macroturbulence import radial_tangential_kernel

C_KMS = 299792.458
LABELS = {"teff": 5800.0, "logg": 4.3, "feh": -0.2}


@pytest.fixture(scope="module")
def model():
    return AnalyticModel(5000.0, 5040.0, velocity_step=1.0, n_lines=20)


def _spec(wave, flux=None, sigma=0.01, **kw):
    flux = np.ones_like(wave) if flux is None else flux
    return Spectrum(wave, flux, np.full_like(wave, sigma), **kw)


def test_parameter_names_and_bounds(model):
    wave = np.linspace(5005, 5035, 500)
    chain = ObservationChain(model, [_spec(wave), _spec(wave)], rv_bounds=(-50, 50))
    assert chain.parameter_names == ("teff", "logg", "feh", "vsini", "rv_0", "rv_1")
    assert chain.bounds["rv_1"] == (-50.0, 50.0)
    single = ObservationChain(model, _spec(wave), rotation=False, rv_bounds=(-50, 50))
    assert single.parameter_names == ("teff", "logg", "feh", "rv")


def test_no_broadening_no_shift_is_the_rebinned_model(model):
    """vsini=0, no LSF, rv=0 and continuum off: the chain is exactly rebin(model)."""
    wave = np.linspace(5005, 5035, 800)
    chain = ObservationChain(model, _spec(wave), continuum_degree=None, rotation=False,
                             rv_bounds=(-50, 50))
    theta = torch.as_tensor(chain.theta_from({**LABELS, "rv": 0.0}))
    with torch.no_grad():
        pred, cont = chain.predict(theta)
        ref = resample.rebin(torch.as_tensor(model.wavelength),
                             model.predict(torch.tensor([5800.0, 4.3, -0.2])),
                             torch.as_tensor(wave))
    np.testing.assert_allclose(pred[0].numpy(), ref.numpy(), atol=1e-12)
    np.testing.assert_allclose(cont[0].numpy(), 1.0)


def test_rv_moves_lines_by_the_doppler_factor(model):
    """A line's flux-weighted centroid moves from λ to λ·sqrt((1+β)/(1-β))."""
    wave = np.linspace(5005, 5035, 6000)
    chain = ObservationChain(model, _spec(wave), continuum_degree=None, rotation=False,
                             rv_bounds=(-100, 100))
    line = float(model.centers[np.argmin(np.abs(model.centers.numpy() - 5020))])
    win = np.abs(wave - line) < 0.25
    cent = []
    for rv in (0.0, 40.0):
        theta = torch.as_tensor(chain.theta_from({**LABELS, "rv": rv}))
        with torch.no_grad():
            depth = 1 - chain.predict(theta)[0][0].numpy()
        w = wave[np.abs(wave - line * np.sqrt((1 + rv / C_KMS) / (1 - rv / C_KMS))) < 0.25]
        d = depth[np.isin(wave, w)]
        cent.append(np.sum(w * d) / np.sum(d))
    assert win.any()
    expected = line * (np.sqrt((1 + 40 / C_KMS) / (1 - 40 / C_KMS)) - 1)
    assert cent[1] - cent[0] == pytest.approx(expected, abs=0.01)


def test_broadening_conserves_equivalent_width_and_lowers_depth(model):
    wave = np.linspace(5005, 5035, 3000)
    obs = _spec(wave)
    sharp = ObservationChain(model, obs, continuum_degree=None, rv_bounds=(-20, 20))
    broad = ObservationChain(model, obs, resolution=20000, continuum_degree=None,
                             rv_bounds=(-20, 20))
    out = []
    for chain, vsini in ((sharp, 0.0), (broad, 20.0)):
        theta = torch.as_tensor(chain.theta_from({**LABELS, "vsini": vsini, "rv": 0.0}))
        with torch.no_grad():
            out.append(chain.predict(theta)[0][0].numpy())
    ew = [np.sum(1 - f) for f in out]
    assert ew[1] == pytest.approx(ew[0], rel=0.01)
    assert (1 - out[1]).max() < 0.8 * (1 - out[0]).max()


def test_continuum_is_profiled_exactly(model):
    """Data = model × quadratic: the profiled Chebyshev continuum recovers the quadratic."""
    wave = np.linspace(5005, 5035, 900)
    truth = {**LABELS, "vsini": 3.0, "rv": 5.0}
    poly = lambda w: 2.0 + 0.3 * (w - 5020) / 15 - 0.1 * ((w - 5020) / 15) ** 2  # noqa: E731
    obs, clean = simulate(model, truth, wave, resolution=30000, snr=1e8, continuum=poly)
    chain = ObservationChain(model, obs, resolution=30000, rv_bounds=(-20, 20))
    with torch.no_grad():
        pred, cont = chain.predict(torch.as_tensor(chain.theta_from(truth)))
    np.testing.assert_allclose(cont[0].numpy(), poly(wave), rtol=1e-6)
    np.testing.assert_allclose(pred[0].numpy(), clean, rtol=1e-6)


def test_chebyshev_basis_maps_good_pixels_to_unit_interval():
    wave = np.linspace(100, 200, 11)
    good = np.ones(11, bool)
    good[:2] = False
    basis = chebyshev_basis(wave, good, 2)
    assert basis.shape == (11, 3)
    assert basis[2, 1] == pytest.approx(-1.0) and basis[-1, 1] == pytest.approx(1.0)


def test_echelle_orders_share_labels_and_exposures_get_their_own_rv(model):
    wave = np.stack([np.linspace(5005, 5019, 400), np.linspace(5018, 5034, 400)])
    ech = EchelleSpectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01),
                          order_numbers=[70, 69])
    chain = ObservationChain(model, [ech, ech], resolution=[30000, 32000], rv_bounds=(-60, 60))
    assert len(chain.segments) == 4
    assert [s.name for s in chain.segments] == ["order 70", "order 69", "exposure 1, order 70",
                                                "exposure 1, order 69"]
    theta = torch.as_tensor(chain.theta_from({**LABELS, "vsini": 2.0, "rv_0": 0.0,
                                              "rv_1": 30.0}))
    with torch.no_grad():
        stellar = chain.resampled(chain.broadened(*chain.split(theta)[:2]), chain.split(theta)[2])
    one = ObservationChain(model, ech, resolution=[30000, 32000], rv_bounds=(-60, 60))
    with torch.no_grad():
        ref = one.resampled(one.broadened(*one.split(torch.as_tensor(
            one.theta_from({**LABELS, "vsini": 2.0, "rv": 30.0})))[:2]),
            torch.tensor([30.0], dtype=torch.float64))
    np.testing.assert_allclose(stellar[3].numpy(), ref[1].numpy(), atol=1e-12)
    assert not np.allclose(stellar[1].numpy(), stellar[3].numpy(), atol=1e-3)


def test_batched_theta_gives_batched_flux(model):
    wave = np.linspace(5005, 5035, 300)
    chain = ObservationChain(model, _spec(wave), resolution=40000, rv_bounds=(-20, 20))
    thetas = np.array([chain.theta_from({**LABELS, "vsini": v, "rv": r})
                       for v, r in ((1.0, 0.0), (8.0, 3.0), (15.0, -7.0))])
    with torch.no_grad():
        batched = chain.predict(torch.as_tensor(thetas))[0][0].numpy()
        single = [chain.predict(torch.as_tensor(t))[0][0].numpy() for t in thetas]
    np.testing.assert_allclose(batched, np.stack(single), atol=1e-12)


def test_telluric_multiplies_on_the_observed_pixels(model):
    wave = np.linspace(5005, 5035, 600)
    tel = 1 - 0.5 * np.exp(-0.5 * ((wave - 5012) / 0.05) ** 2)
    plain = ObservationChain(model, _spec(wave), continuum_degree=None, rv_bounds=(-20, 20))
    with_tel = ObservationChain(model, _spec(wave), telluric=tel, continuum_degree=None,
                                rv_bounds=(-20, 20))
    theta = torch.as_tensor(plain.theta_from({**LABELS, "vsini": 3.0, "rv": 9.0}))
    with torch.no_grad():
        a = plain.predict(theta)[0][0].numpy()
        b = with_tel.predict(theta)[0][0].numpy()
    np.testing.assert_allclose(b, a * tel, atol=1e-12)
    tel_spec = Spectrum(np.linspace(5000, 5040, 4000),
                        np.full(4000, 0.9), np.full(4000, 0.01))
    from_spec = ObservationChain(model, _spec(wave), telluric=tel_spec, continuum_degree=None,
                                 rv_bounds=(-20, 20))
    with torch.no_grad():
        c = from_spec.predict(theta)[0][0].numpy()
    np.testing.assert_allclose(c, 0.9 * a, rtol=1e-10)


def test_pixels_beyond_the_model_are_cropped_and_masked_pixels_weightless(model):
    wave = np.linspace(4990, 5035, 900)   # starts before the model (5000 Å)
    mask = np.zeros(900, bool)
    mask[500:510] = True
    chain = ObservationChain(model, _spec(wave, mask=mask), rv_bounds=(-30, 30))
    seg = chain.segments[0]
    assert float(seg.wavelength[0]) > 5000.0 * (1 + 30 / C_KMS)
    assert int((seg.ivar == 0).sum()) == 10
    assert chain.n_pixels == len(seg.wavelength) - 10


def test_clear_errors_for_bad_input(model):
    with pytest.raises(OutOfGridError, match=r"covers 6000.0-6100.0 Å, the model 5000.0-5040.0"):
        ObservationChain(model, _spec(np.linspace(6000, 6100, 100)))
    wave = np.linspace(5005, 5035, 100)
    with pytest.raises(OutOfGridError, match="unmasked"):
        ObservationChain(model, _spec(wave, mask=np.ones(100, bool)))
    with pytest.raises(InvalidSpectrumError, match="no uncertainties"):
        ObservationChain(model, Spectrum(wave, np.ones(100)))
    with pytest.raises(InvalidSpectrumError, match="resolution has shape"):
        ObservationChain(model, _spec(wave), resolution=[30000, 40000, 50000])
    with pytest.raises(FitError, match="rv_bounds"):
        ObservationChain(model, _spec(wave), rv_bounds=(10, -10))
    with pytest.raises(InvalidSpectrumError, match="observation must be"):
        ObservationChain(model, np.ones(10))


def test_fast_shifted_rebin_equals_ops_rebin(model, rng):
    """The search-free shifted rebinning agrees with ops.resample.rebin of the shifted grid,
    in value and in its RV derivative."""
    from photosphere.ops import doppler

    wave = np.linspace(5008, 5032, 700) + rng.uniform(-0.005, 0.005, 700)  # irregular pixels
    chain = ObservationChain(model, _spec(wave), continuum_degree=None, rotation=False,
                             rv_bounds=(-100, 100))
    seg = chain.segments[0]
    i0, i1 = seg.model_slice
    flux = model.predict(torch.tensor([[5800.0, 4.3, -0.2], [5000.0, 3.5, 0.3]]))[:, i0:i1]
    rv = torch.tensor([-63.2, 41.7], dtype=torch.float64, requires_grad=True)
    fast = chain._shifted_rebin(seg, flux, rv)
    ref = resample.rebin(doppler.shift_wavelength(torch.as_tensor(model.wavelength[i0:i1]), rv),
                         flux, seg.wavelength)
    # model pixel edges: log-midpoints here, linear midpoints in ops (relative difference ~Δ²)
    np.testing.assert_allclose(fast.detach().numpy(), ref.detach().numpy(), atol=1e-8)
    g_fast = torch.autograd.grad(fast.sum(), rv)[0]
    g_ref = torch.autograd.grad(ref.sum(), rv)[0]
    np.testing.assert_allclose(g_fast.numpy(), g_ref.numpy(), rtol=1e-6)


def test_echelle_orders_outside_the_model_are_dropped_and_none_inside_is_an_error(model):
    inside, outside = np.linspace(5005, 5035, 300), np.linspace(6000, 6030, 300)
    both = EchelleSpectrum(np.stack([outside, inside]), np.ones((2, 300)),
                           np.full((2, 300), 0.01))
    chain = ObservationChain(model, both, rv_bounds=(-30, 30))
    assert [s.order for s in chain.segments] == [1]
    far = EchelleSpectrum(np.stack([outside, outside + 100]), np.ones((2, 300)),
                          np.full((2, 300), 0.01))
    with pytest.raises(OutOfGridError, match=r"covers 6000.0-6130.0 Å, the model 5000.0-5040.0"):
        ObservationChain(model, far)
    masked = both.replace(mask=np.stack([np.zeros(300, bool), np.ones(300, bool)]))
    with pytest.raises(OutOfGridError, match="unmasked"):
        ObservationChain(model, masked)


def test_masked_copy_drops_pixels_and_keeps_the_original(model):
    wave = np.linspace(5005, 5035, 600)
    chain = ObservationChain(model, _spec(wave), rv_bounds=(-30, 30))
    drop = np.zeros(len(chain.segments[0].wavelength), bool)
    drop[:50] = True
    fewer = chain.masked([drop])
    assert fewer.n_pixels == chain.n_pixels - 50
    assert float(fewer.segments[0].ivar[:50].abs().sum()) == 0.0
    assert int((chain.segments[0].ivar > 0).sum()) == chain.n_pixels
    with pytest.raises(FitError, match="one mask per segment"):
        chain.masked([drop, drop])
    with pytest.raises(FitError, match="usable pixels left"):
        chain.masked([np.ones_like(drop)])


@pytest.mark.parametrize("resolution", [30000.0, None])
def test_macroturbulence_is_rotation_then_the_rt_kernel_then_the_lsf(model, resolution):
    """The chain's combined kernel equals applying rotation, the radial-tangential kernel and
    the Gaussian LSF one after the other (ops functions), then rebinning."""
    wave = np.linspace(5008, 5032, 1200)
    theta_v = {**LABELS, "vsini": 5.0, "rv": 0.0}
    chain = ObservationChain(model, _spec(wave), resolution=resolution, continuum_degree=None,
                             rv_bounds=(-20, 20), vsini_bounds=(0, 10), macroturbulence=4.0)
    with torch.no_grad():
        pred = chain.predict(torch.as_tensor(chain.theta_from(theta_v)))[0][0].numpy()
        f = model.predict(torch.tensor([5800.0, 4.3, -0.2])).to(torch.float64)
        f = rotation.rotational_broaden(f, torch.tensor(5.0), chain.velocity_step)
        k = torch.as_tensor(radial_tangential_kernel(chain.velocity_step, 4.0))
        h = k.numel() // 2
        f = torch.nn.functional.conv1d(
            torch.nn.functional.pad(f[None, None], (h, h), mode="replicate"), k.flip(0)[None, None]
        )[0, 0]
        if resolution is not None:
            f = lsf.gaussian_broaden(f, torch.tensor(resolution), chain.velocity_step)
        ref = resample.rebin(torch.as_tensor(model.wavelength), f, torch.as_tensor(wave))
    np.testing.assert_allclose(pred, ref.numpy(), atol=2e-6)
    # and it broadens: deeper lines without it
    plain = ObservationChain(model, _spec(wave), resolution=resolution, continuum_degree=None,
                             rv_bounds=(-20, 20), vsini_bounds=(0, 10))
    with torch.no_grad():
        sharp = plain.predict(torch.as_tensor(plain.theta_from(theta_v)))[0][0].numpy()
    assert (1 - pred).max() < 0.96 * (1 - sharp).max()
    assert np.sum(1 - pred) == pytest.approx(np.sum(1 - sharp), rel=0.01)


def test_macroturbulence_out_of_range_is_refused(model):
    wave = np.linspace(5008, 5032, 300)
    with pytest.raises(FitError, match="macroturbulence"):
        ObservationChain(model, _spec(wave), macroturbulence=-1.0)


class WindowedModel:
    """The analytic model seen only through two wavelength windows (a training set's layout)."""

    medium = "air"

    def __init__(self, full: AnalyticModel, windows):
        self.full = full
        w = full.wavelength
        self.keep = np.concatenate([np.flatnonzero((w >= lo) & (w <= hi)) for lo, hi in windows])
        self.wavelength = w[self.keep]
        self.label_names, self.bounds = full.label_names, full.bounds

    def predict(self, labels):
        return self.full.predict(labels)[..., torch.as_tensor(self.keep)]


def test_a_windowed_model_predicts_like_the_full_one_inside_its_windows():
    full = AnalyticModel(5000.0, 5100.0)
    windowed = WindowedModel(full, [(5005.0, 5040.0), (5060.0, 5095.0)])
    wave = np.linspace(5002.0, 5098.0, 3000)
    obs = Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01), medium="air")
    kw = dict(resolution=50_000, continuum_degree=1, rv_bounds=(-20.0, 20.0),
              vsini_bounds=(0.0, 10.0))
    chain_w = ObservationChain(windowed, obs, **kw)
    chain_f = ObservationChain(full, obs, **kw)
    assert len(chain_w.segments) == 2 and len(chain_f.segments) == 1
    assert chain_w.segments[1].name == "window 1"
    theta = torch.tensor([5600.0, 4.2, -0.2, 4.0, 7.5], dtype=torch.float64)
    stellar_w = chain_w.resampled(chain_w.broadened(theta[:3], theta[3]), theta[4:])
    stellar_f = chain_f.resampled(chain_f.broadened(theta[:3], theta[3]), theta[4:])[0]
    wf = chain_f.segments[0].wavelength
    for seg, pred in zip(chain_w.segments, stellar_w, strict=True):
        # the windowed segments sit inside the windows, away from the gap by the margin
        lo, hi = float(seg.wavelength[0]), float(seg.wavelength[-1])
        assert lo > 5005.0 and hi < 5095.0 and not (lo < 5050.0 < hi)
        pick = (wf >= seg.wavelength[0]) & (wf <= seg.wavelength[-1])
        torch.testing.assert_close(pred, stellar_f[pick], rtol=0, atol=1e-9)


def test_fit_through_a_windowed_model_recovers_the_labels():
    from photosphere.infer.optimize import fit

    full = AnalyticModel(5000.0, 5100.0)
    windowed = WindowedModel(full, [(5005.0, 5040.0), (5060.0, 5095.0)])
    truth = {"teff": 5800.0, "logg": 4.3, "feh": -0.3, "vsini": 5.0, "rv": 12.0}
    obs, _ = simulate(full, truth, np.linspace(5003.0, 5097.0, 4000), resolution=60_000,
                   snr=200, seed=4)
    result = fit(windowed, obs, resolution=60_000, model_error="none")
    for name in ("teff", "logg", "feh", "rv"):
        value, sigma = result.labels[name]
        assert abs(value - truth[name]) < 4 * sigma + 1e-6, (name, value, sigma)


def test_spline_continuum_follows_an_unnormalised_spectrum():
    from photosphere.infer.chain import spline_basis

    model = AnalyticModel(5000.0, 5100.0)
    wave = np.linspace(5005.0, 5095.0, 2500)
    truth = {"teff": 5700.0, "logg": 4.4, "feh": 0.0, "vsini": 3.0, "rv": 0.0}
    # a blaze-like continuum a low-degree polynomial cannot follow: 1300 -> 1500 with a wiggle
    def blaze(w):
        return (1300.0 + 200.0 * (w - 5005.0) / 90.0
                 + 60.0 * np.sin(2 * np.pi * (w - 5005.0) / 40.0))
    obs, _ = simulate(model, truth, wave, resolution=60_000, snr=300, continuum=blaze, seed=2)
    theta = torch.as_tensor([5700.0, 4.4, 0.0, 3.0, 0.0], dtype=torch.float64)
    residual = {}
    for name, kw in {"polynomial": {"continuum_degree": 2},
                     "spline": {"continuum_degree": 2, "continuum_knot_spacing": 10.0}}.items():
        chain = ObservationChain(model, obs, resolution=60_000, rv_bounds=(-5.0, 5.0), **kw)
        full, _cont = chain.predict(theta)
        seg = chain.segments[0]
        good = seg.ivar > 0
        residual[name] = float(torch.sqrt(torch.mean(((seg.flux - full[0]) / torch.as_tensor(
            seg.sigma).clamp(max=1e30))[good] ** 2)))
    assert residual["spline"] < 1.3          # noise-limited (χ² per pixel ~ 1)
    assert residual["polynomial"] > 5.0      # the quadratic misses the wiggle by many σ
    basis = spline_basis(wave, np.ones_like(wave, bool), 10.0)
    assert basis.shape == (2500, 9 + 3)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0)  # a partition of unity


def test_knot_spacing_needs_a_continuum(model):
    wave = np.linspace(5005.0, 5095.0, 500)
    obs = Spectrum(wave, np.ones_like(wave), np.full_like(wave, 0.01), medium="air")
    for bad in ({"continuum_degree": None, "continuum_knot_spacing": 20.0},
                {"continuum_knot_spacing": -1.0}, {"continuum_knot_spacing": float("nan")}):
        with pytest.raises(FitError, match="continuum_knot_spacing"):
            ObservationChain(model, obs, **bad)


@pytest.mark.parametrize("taps", [31, 481])
def test_fft_convolution_equals_the_direct_one_and_carries_tangents(taps, rng):
    """Long kernels (low resolution) and float64 models are convolved by FFT: the same numbers
    as the direct convolution, and forward-mode tangents pass through."""
    import torch.autograd.forward_ad as fwAD

    from photosphere.infer.chain import _convolve
    from photosphere.infer.optimize import _load_forward_ad

    _load_forward_ad()  # torch's first dual number warns from inside torch otherwise
    flux = torch.as_tensor(1.0 - 0.5 * rng.random((3, 5000)))
    kernel = torch.as_tensor(rng.random((3, taps)))
    kernel = (kernel + kernel.flip(-1)) / (kernel + kernel.flip(-1)).sum(-1, keepdim=True)
    direct = _convolve(flux, kernel, torch.float32)  # float32 direct when the kernel is short
    by_fft = _convolve(flux, kernel, torch.float64)
    np.testing.assert_allclose(by_fft.numpy(), direct.numpy(), rtol=0, atol=3e-6)
    tangent = torch.as_tensor(rng.normal(size=(3, taps)))
    with fwAD.dual_level():
        out = _convolve(flux, fwAD.make_dual(kernel, tangent), torch.float64)
        _, jvp = fwAD.unpack_dual(out)
    expected = _convolve(flux, tangent, torch.float64)
    np.testing.assert_allclose(jvp.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_fft_lengths_and_the_shared_kernel_transform_change_nothing(rng):
    """The FFT length is a 2·3·5-smooth number, not a power of two, and a kernel's transform
    kept for several segments gives the same convolutions as one made for each."""
    from photosphere.infer.chain import _fft_convolve, _fft_length

    for n in (1442 + 60, 4935, 9614 + 60, 16384, 16385):
        size = _fft_length(n)
        assert n <= size <= 1.1 * n + 8
        m = size
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1
    kernel = torch.as_tensor(rng.random((4, 41)))
    spectra: dict = {}
    for n in (3000, 5000, 3000):
        padded = torch.as_tensor(rng.random((4, n + 40)))
        shared = _fft_convolve(padded, kernel, spectra)
        alone = _fft_convolve(padded, kernel)
        np.testing.assert_array_equal(shared.numpy(), alone.numpy())
        direct = torch.nn.functional.conv1d(padded.unsqueeze(0), kernel.flip(-1).unsqueeze(1),
                                            groups=4).squeeze(0)
        np.testing.assert_allclose(shared.numpy(), direct.numpy(), rtol=0, atol=1e-12)
    assert len(spectra) == 2


def test_profiled_continuum_follows_masks_and_inflated_variances(model):
    """The continuum solve keeps the data's weights folded into the basis products; masked and
    inflated copies of a chain (other weights) must not reuse the original's: each equals the
    general weighted solve with that copy's own inverse variances."""
    wave = np.linspace(5005.0, 5035.0, 1500)
    rng = np.random.default_rng(3)
    flux = (1.0 + 0.1 * (wave - 5020.0) / 15.0) * (1 + 0.01 * rng.normal(size=wave.size))
    chain = ObservationChain(model, _spec(wave, flux), rv_bounds=(-50, 50),
                             continuum_knot_spacing=8.0)
    theta = torch.as_tensor(chain.theta_from({**LABELS, "vsini": 3.0, "rv": 5.0}))
    drop = [np.arange(s.flux.shape[-1]) % 7 == 0 for s in chain.segments]
    with torch.no_grad():
        stellar = chain.resampled(chain.broadened(*chain.split(theta)[:2]),
                                  chain.split(theta)[2])
        for c in (chain, chain.masked(drop), chain.inflated(0.05, stellar), chain):
            fast = c.continuum(stellar)
            general = c.continuum(stellar, weights=[s.ivar for s in c.segments])
            for a, b in zip(fast, general, strict=True):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)
        masked = chain.masked(drop).continuum(stellar)
        assert not np.allclose(masked[0].numpy(), chain.continuum(stellar)[0].numpy(),
                               rtol=1e-12, atol=0)
