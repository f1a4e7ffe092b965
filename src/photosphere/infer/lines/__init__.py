"""Fitting the line model (:mod:`photosphere.models.lines`) to an observed spectrum.

:mod:`.fit` learns the per-line corrections, rv, vsini, continuum and telluric scalings
(:func:`~.fit.fit_lines`; its initial RV is the inference layer's RV scan), :mod:`.missing` adds
lines the clone lacks, :mod:`.table` tabulates and plots what was learned.
"""
