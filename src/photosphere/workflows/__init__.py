"""End-to-end workflows built on the library (data in, trained models and results out)."""
