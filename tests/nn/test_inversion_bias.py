"""The network's inversion bias removed with its training model (nn/inversion_bias.py)."""

import numpy as np
import pytest

from photosphere.nn.inversion_bias import remove_inversion_bias, row_noise

PIXELS = 256
DEPTH = 0.1  # line depth per unit label


def model_image(theta):
    """Two rows, each one Gaussian line whose depth is DEPTH × its label."""
    x = np.arange(PIXELS)
    line = np.exp(-0.5 * ((x - PIXELS / 2) / 6.0) ** 2)
    return np.stack([1 - DEPTH * float(t) * line for t in theta])


def shrinking_network(image):
    """Reads each row's central depth (≈ 0.97 DEPTH θ), pulled towards a point and mixing the
    labels: μ = A depth / DEPTH + b."""
    depth = (1 - image[:, PIXELS // 2 - 2:PIXELS // 2 + 3].mean(axis=1)) / DEPTH
    a = np.array([[0.8, 0.1], [0.0, 0.7]])
    return a @ depth + np.array([1.0, 1.0]), np.eye(2)


def test_the_labels_whose_images_the_network_reads_as_the_spectrum_are_found():
    truth = np.array([3.0, 1.5])
    mu, _ = shrinking_network(model_image(truth))
    assert np.max(np.abs(mu - truth)) > 0.3  # the bias to remove
    theta = remove_inversion_bias(mu, model_image(truth), shrinking_network, model_image,
                                  rounds=8, draws=1)
    np.testing.assert_allclose(theta, truth, atol=0.01)
    two = remove_inversion_bias(mu, model_image(truth), shrinking_network, model_image,
                                rounds=2, draws=1)
    assert np.max(np.abs(two - truth)) < 0.2 * np.max(np.abs(mu - truth))


def test_blank_rows_stay_blank_and_noise_follows_the_rows_snr():
    rng = np.random.default_rng(4)
    image = model_image([2.0, 1.0])
    image[0] += rng.normal(0, 0.01, PIXELS)
    image[1] = 1.0  # a window the spectrum does not cover
    sigma = row_noise(image)
    assert sigma[1] == 0.0 and sigma[0] == pytest.approx(0.01, rel=0.25)
    seen = []

    def run(img):
        seen.append(img)
        return np.zeros(2), np.eye(2)

    remove_inversion_bias(np.zeros(2), image, run, model_image, rounds=1, draws=3)
    assert len(seen) == 3
    for img in seen:
        assert np.all(img[1] == 1.0)
        assert np.std(img[0][:40]) == pytest.approx(0.01, rel=0.3)  # continuum noise drawn
    assert not np.array_equal(seen[0], seen[1])  # draws differ, seeds fixed
    again = []
    remove_inversion_bias(np.zeros(2), image, lambda i: (again.append(i), run(i))[1],
                          model_image, rounds=1, draws=3)
    np.testing.assert_array_equal(np.stack(again), np.stack(seen[:3]))
