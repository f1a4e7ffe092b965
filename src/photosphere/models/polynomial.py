"""Polynomial label vectors: the design matrix of The Cannon and its analytic label derivatives.

A *term* is a tuple of label indices, one entry per factor: ``()`` is the constant, ``(0,)`` the
first label, ``(0, 0)`` its square, ``(0, 2)`` the cross term of labels 0 and 2. A polynomial of
order 2 in 3 labels therefore has 1 + 3 + 6 = 10 terms. The functions here work on NumPy arrays
and (for :func:`design_matrix`) on torch tensors, with any leading batch dimensions.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError

Term = tuple[int, ...]


def polynomial_terms(n_labels: int, order: int = 2, cross_terms: bool = True) -> list[Term]:
    """All terms up to total degree ``order`` (constant first, then by degree).

    With ``cross_terms=False`` only pure powers of single labels are kept (x, x², ... per label).
    """
    if n_labels < 1:
        raise ModelError(f"a polynomial needs at least one label, got n_labels={n_labels}")
    if order < 1:
        raise ModelError(f"polynomial order must be >= 1, got order={order}")
    terms: list[Term] = [()]
    for degree in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(range(n_labels), degree):
            if cross_terms or len(set(combo)) == 1:
                terms.append(tuple(combo))
    return terms


def parse_terms(terms: Sequence[Sequence[str]], label_names: Sequence[str]) -> list[Term]:
    """Terms given by label names, e.g. ``[("teff",), ("teff", "logg")]`` -> index tuples.

    The constant term is always included (added first when missing); duplicates are an error.
    """
    index = {name: i for i, name in enumerate(label_names)}
    out: list[Term] = [()]
    for term in terms:
        names = (term,) if isinstance(term, str) else tuple(term)
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ModelError(
                f"term {names!r} names unknown label(s) {unknown}; labels are {list(label_names)}")
        t = tuple(sorted(index[n] for n in names))
        if t in out:
            if t == ():
                continue
            raise ModelError(f"term {names!r} is given twice")
        out.append(t)
    return out


def term_names(terms: Sequence[Term], label_names: Sequence[str]) -> list[str]:
    """Readable names: ``"1"``, ``"teff"``, ``"teff^2"``, ``"teff*logg"``."""
    names = []
    for t in terms:
        if not t:
            names.append("1")
            continue
        parts = []
        for i in sorted(set(t)):
            power = t.count(i)
            parts.append(label_names[i] + (f"^{power}" if power > 1 else ""))
        names.append("*".join(parts))
    return names


def design_matrix(x, terms: Sequence[Term]):
    """Label vectors: (..., n_labels) scaled labels -> (..., n_terms). NumPy or torch."""
    columns = []
    ones = x[..., 0] * 0 + 1
    for t in terms:
        col = ones
        for i in t:
            col = col * x[..., i]
        columns.append(col)
    if isinstance(x, np.ndarray):
        return np.stack(columns, axis=-1)
    import torch

    return torch.stack(columns, dim=-1)


def design_jacobian(x: np.ndarray, terms: Sequence[Term]) -> np.ndarray:
    """∂(label vector)/∂(scaled label): (..., n_labels) -> (..., n_terms, n_labels), analytic."""
    x = np.asarray(x, dtype=float)
    n_labels = x.shape[-1]
    out = np.zeros((*x.shape[:-1], len(terms), n_labels))
    for p, t in enumerate(terms):
        for k in set(t):
            rest = list(t)
            rest.remove(k)
            col = np.full(x.shape[:-1], float(t.count(k)))
            for i in rest:
                col = col * x[..., i]
            out[..., p, k] = col
    return out


def term_mask(terms: Sequence[Term], allowed: np.ndarray) -> np.ndarray:
    """Censoring: (n_pix, n_labels) bool allowed -> (n_pix, n_terms) bool, True = term is used.

    A term is used at a pixel only when every label in it may influence that pixel.
    """
    allowed = np.asarray(allowed, dtype=bool)
    mask = np.ones((allowed.shape[0], len(terms)), dtype=bool)
    for p, t in enumerate(terms):
        for i in set(t):
            mask[:, p] &= allowed[:, i]
    return mask
