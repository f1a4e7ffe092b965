"""The interpretable line-by-line model (blasé; Gully-Santiago & Morley 2022).

A spectrum is cloned into ~10⁴ individual Voigt lines (:mod:`.detect`, :mod:`.clone`), evaluated
sparsely line × window (:mod:`.model`), observed through RV, vsini, LSF, tellurics
(:mod:`.telluric`) and a continuum, and refitted to data (:mod:`photosphere.infer.lines`).
"""
