"""Ready-made spectra with known labels for training, testing and benchmarks."""
