"""The compiled (numba) kernel of :class:`photosphere.models.cannon_newton.ScatterNewton`: the whole
s² Newton search of one block of pixels in one call (from the normal matrices at s² = 0, one
product for all pixels made by the caller), float64 throughout.

Same algorithm, same decisions as the NumPy path (that module's docstring): every Newton
iteration evaluates the block's active pixels together, fully (normal matrices from the distinct
label monomials, Cholesky factor, one refinement step of θ, P', P'', dθ̂/ds² = -M⁻¹c) or cheaply
(θ̂ predicted to first order and refined with the last factor). What is compiled is everything
between the matrix products: each pixel's element-wise chain (weights, w r, the sums of P' and
P'', the residual update) is one loop over its stars, the 21 × 21 factorisations, solves and the
Newton bookkeeping are scalar loops, and no array is allocated per iteration but two scalars
for each BLAS call. The products that need many pixels to be efficient stay BLAS products over
the pixels of a set — the normal matrices (pixels × stars) @ (stars × monomials), Σ w r ℓ
(pixels × stars) @ (stars × terms), the residual change (pixels × terms) @ (terms × stars) —
called from the kernel through SciPy's BLAS (``scipy.linalg.cython_blas.dgemm``). A pixel's
refinement steps stop as soon as its own θ has converged (the NumPy path refines a slice of
pixels until all of them have).

:func:`solve_block` is written as its stages (the s² = 0 evaluation, the choice of full or
cheap evaluations, the full evaluations, the two halves of a cheap one, the Newton steps, the
final ln L), each an ``@_jit(inline=True)`` function: Numba inlines their IR into it, so the
compiled kernel is one function, as fast as the single long function it was written as before
(as separately compiled calls they cost 2-5 % of a training; docs/architecture.md). A call to
one of them must pass at most 30 arguments (CPython passes more as ``*args``, which Numba's
inliner refuses).

numba is optional: :data:`AVAILABLE` says whether it (and this kernel) could be loaded; without
it the NumPy path is used. The functions are compiled on the first call and cached on disk
(``cache=True``), so later processes load them instead of compiling.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import llvmlite.binding as _llvm
    import numba
    from numba import types as _types
    from numba.core import cgutils as _cgutils
    from numba.extending import get_cython_function_address, intrinsic
except ImportError:          # optional dependency: the NumPy path is used instead
    numba = None

AVAILABLE = numba is not None

SINGULAR = 1          # status of solve_block: a normal matrix was not positive definite
_GEMM_SYMBOL = "photosphere_cannon_dgemm"

# reassociation and contraction only, in the loops over stars: sums and products of finite
# numbers (no assumption about inf/NaN, so masked stars, ivar = 0, stay exact zeros)
_FAST = ("reassoc", "contract", "nsz")


def _jit(fastmath=(), inline=False):
    def wrap(func):
        if numba is None:
            return func
        # error_model="numpy": x / 0 gives inf instead of raising, which lets the loops with
        # a division be vectorised (no division by zero happens in them); inline: the
        # function's Numba IR is inlined into its callers (the stages of solve_block: the
        # compiled kernel stays one function, as fast as before the split)
        return numba.njit(cache=True, nogil=True, error_model="numpy",
                          fastmath=set(fastmath) if fastmath else False,
                          inline="always" if inline else "never")(func)
    return wrap


if AVAILABLE:
    # SciPy's dgemm under a fixed symbol name, so that the compiled code refers to it by name
    # and can be cached (a function pointer baked into the code could not)
    _llvm.add_symbol(_GEMM_SYMBOL,
                     get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))
    _vp = _types.voidptr
    _dgemm = _types.ExternalFunction(_GEMM_SYMBOL, _types.void(*[_vp] * 13))

    @intrinsic
    def _ptr(typingctx, arr):
        """The data pointer of an array (for the Fortran BLAS interface)."""
        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.bitcast(ary.data, _cgutils.voidptr_t)
        return _vp(arr), codegen

    @_jit()
    def _gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, work):
        """c (m, n) = alpha op(a) op(b) + beta c, row-major, through the column-major Fortran
        dgemm (row-major c = op(a) op(b) is column-major cᵀ = op(b)ᵀ op(a)ᵀ). a, b, c: arrays
        whose data pointers are the matrices' first elements (a view starting there); lda, ldb,
        ldc: their row strides in elements; trans_*: 78 ('N') or 84 ('T'); work: (8,) int32
        scratch for the Fortran arguments (passed by reference)."""
        if m == 0 or n == 0:
            return
        work[0] = n
        work[1] = m
        work[2] = k
        work[3] = ldb
        work[4] = lda
        work[5] = ldc
        work[6] = trans_b
        work[7] = trans_a
        scalars = np.empty(2)
        scalars[0] = alpha
        scalars[1] = beta
        _dgemm(_ptr(work[6:]), _ptr(work[7:]), _ptr(work[0:]), _ptr(work[1:]), _ptr(work[2:]),
               _ptr(scalars[0:]), _ptr(b), _ptr(work[3:]), _ptr(a), _ptr(work[4:]),
               _ptr(scalars[1:]), _ptr(c), _ptr(work[5:]))


@_jit()
def input_summary(flux, ivar):
    """One pass over the training arrays (n_stars, n_pix) for CannonModel.fit's checks: the
    smallest ivar (NaN if any is NaN), whether every flux and every ivar is finite, and per
    pixel the stars usable after cleaning (ivar > 0, finite ivar and flux) (n_pix,) int64."""
    n_stars, n_pix = flux.shape
    lowest = 0.0
    has_nan = False
    flux_finite = True
    ivar_finite = True
    n_valid = np.zeros(n_pix, dtype=np.int64)
    for s in range(n_stars):
        for p in range(n_pix):
            iv = ivar[s, p]
            f = flux[s, p]
            ok_f = math.isfinite(f)
            ok_iv = math.isfinite(iv)
            flux_finite &= ok_f
            ivar_finite &= ok_iv
            has_nan |= iv != iv
            if iv < lowest:                     # -inf included, NaN not
                lowest = iv
            n_valid[p] += ok_f and ok_iv and iv > 0
    return (np.nan if has_nan else lowest), flux_finite, ivar_finite, n_valid


@_jit(_FAST)
def _subtract_rows(at, d, r):
    """r[n] -= Σ_j d[j] at[j, n] (one pixel's residual change for a θ step d)."""
    for j in range(at.shape[0]):
        row = at[j]
        dj = d[j]
        for i in range(r.size):
            r[i] -= dj * row[i]


@_jit(_FAST)
def _weights(ivar, s2, w):
    """w = 1/(s² + σ²) = ivar / (1 + s² ivar) (0 where ivar = 0)."""
    for i in range(ivar.size):
        iv = ivar[i]
        w[i] = iv / (1.0 + s2 * iv)


@_jit(_FAST)
def _product(w, r, q):
    """q = w r."""
    for i in range(w.size):
        q[i] = w[i] * r[i]


@_jit(_FAST)
def _update(r, change, w, q):
    """r -= change; q = w r; returns Σ q² and Σ w (P' = ½ (Σ q² - Σ w))."""
    sq = 0.0
    sw = 0.0
    for i in range(r.size):
        ri = r[i] - change[i]
        r[i] = ri
        x = w[i] * ri
        q[i] = x
        sq += x * x
        sw += w[i]
    return sq, sw


@_jit(_FAST)
def _update_second(r, change, w, p):
    """r -= change; p = w² r; returns Σ (w r)², Σ w, Σ w², Σ w³ r² (the sums of P', P'')."""
    sq = 0.0
    sw = 0.0
    sw2 = 0.0
    spq = 0.0
    for i in range(r.size):
        ri = r[i] - change[i]
        r[i] = ri
        wi = w[i]
        q = wi * ri
        pi = wi * q
        p[i] = pi
        sq += q * q
        sw += wi
        sw2 += wi * wi
        spq += pi * q
    return sq, sw, sw2, spq


@_jit(_FAST)
def _update_first(r, change, ivar):
    """r -= change at s² = 0; returns Σ (ivar r)², Σ ivar, χ² = Σ ivar r², Σ ivar², max ivar."""
    sq = 0.0
    sw = 0.0
    chi2 = 0.0
    sw2 = 0.0
    largest = 0.0
    for i in range(r.size):
        ri = r[i] - change[i]
        r[i] = ri
        iv = ivar[i]
        q = iv * ri
        sq += q * q
        sw += iv
        chi2 += q * ri
        sw2 += iv * iv
    for i in range(r.size):
        if ivar[i] > largest:
            largest = ivar[i]
    return sq, sw, chi2, sw2, largest


@_jit(_FAST)
def _loglike(r, ivar, s2, k):
    """-½ [Σ r² ivar / (1 + s² ivar) + Σ ln(1 + s² ivar)], the logarithms taken of products of k
    consecutive factors (the caller picks k so that no product can overflow)."""
    chi2 = 0.0
    for i in range(r.size):
        iv = ivar[i]
        chi2 += r[i] * r[i] * iv / (1.0 + s2 * iv)
    logs = 0.0
    n = r.size
    i = 0
    while i < n:
        stop = min(i + k, n)
        prod = 1.0
        for j in range(i, stop):
            prod *= 1.0 + s2 * ivar[j]
        logs += math.log(prod)
        i = stop
    return -0.5 * (chi2 + logs)


@_jit(_FAST)
def _cholesky(m, lower):
    """Cholesky factor of m (P, P) into lower; False if m is not positive definite."""
    n = m.shape[0]
    for j in range(n):
        s = m[j, j]
        for k in range(j):
            s -= lower[j, k] * lower[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        lower[j, j] = d
        for i in range(j + 1, n):
            s = m[i, j]
            for k in range(j):
                s -= lower[i, k] * lower[j, k]
            lower[i, j] = s / d
        for i in range(j):
            lower[i, j] = 0.0
    return True


@_jit(_FAST)
def _chol_solve(lower, b, out):
    """out = M⁻¹ b for M = L Lᵀ (L lower triangular)."""
    n = b.size
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= lower[i, k] * out[k]
        out[i] = s / lower[i, i]
    for i in range(n - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, n):
            s -= lower[k, i] * out[k]
        out[i] = s / lower[i, i]


@_jit()
def _factor(flat, inverse, rows, cols, keep, has_keep, m, lower):
    """Cholesky factor of M (P, P) built from its distinct monomial sums flat (n_monomials,);
    censored terms (keep False) decoupled with a unit diagonal. False if singular."""
    for k in range(inverse.size):
        v = flat[inverse[k]]
        m[rows[k], cols[k]] = v
        m[cols[k], rows[k]] = v
    if has_keep:
        n = m.shape[0]
        for i in range(n):
            for j in range(n):
                if not (keep[i] and keep[j]):
                    m[i, j] = 0.0
            if not keep[i]:
                m[i, i] = 1.0
    return _cholesky(m, lower)


@_jit()
def _mask(v, keep, has_keep):
    if has_keep:
        for j in range(v.size):
            if not keep[j]:
                v[j] = 0.0


@_jit()
def _change(s_new, s_old, iv_max):
    """Largest relative weight change between s² = s_old and s_new (NaN if s_old is)."""
    return abs(s_new - s_old) * iv_max / (1 + min(s_new, s_old) * iv_max)


@_jit()
def _newton_step(p, t, lo, hi, d1, d2, t_floor, tolerance, loglike_tolerance):
    """The Newton step in t = ln s² of pixel p, inside the bracket [lo, hi] that the signs of P'
    have established (bisection otherwise). Returns (new t, done, to_zero): done when the step
    is below the tolerance and would gain < loglike_tolerance; to_zero when s² heads below the
    floor with P' < 0 (s² = 0 is then taken)."""
    max_step = 3.0
    tp = t[p]
    s = math.exp(tp)
    g = s * d1[p]                                            # dP/dt
    h = s * s * d2[p] + g                                    # d²P/dt²
    if g > 0:
        lo[p] = tp
    else:
        hi[p] = tp
    if h < 0:
        step = -g / h
    elif g > 0:
        step = max_step
    elif g < 0:
        step = -max_step
    else:
        step = 0.0
    step = min(max(step, -max_step), max_step)
    new = tp + step
    if (new <= lo[p] or new >= hi[p]) and math.isfinite(lo[p]) and math.isfinite(hi[p]):
        new = 0.5 * (lo[p] + hi[p])
    done = abs(new - tp) < tolerance and abs(g * (new - tp)) < 2 * loglike_tolerance
    to_zero = new < t_floor[p] and g < 0
    return new, done, to_zero


@_jit(inline=True)
def _gather_block(flux, ivar_all, start, nb, resid, ivar):
    """Copy pixels start … start + nb - 1 of flux, ivar_all (n_stars, n_pix) into the rows of
    resid, ivar (≥nb, n_stars), pixel-major, so that every per-pixel loop is contiguous; tiles
    of 8 stars, so that whole cache lines are written."""
    n_stars = flux.shape[0]
    s0 = 0
    while s0 + 8 <= n_stars:
        for p in range(nb):
            for s in range(s0, s0 + 8):
                resid[p, s] = flux[s, start + p]
        for p in range(nb):
            for s in range(s0, s0 + 8):
                ivar[p, s] = ivar_all[s, start + p]
        s0 += 8
    for s in range(s0, n_stars):
        for p in range(nb):
            resid[p, s] = flux[s, start + p]
            ivar[p, s] = ivar_all[s, start + p]


@_jit(inline=True)
def _solve_at_zero(normal0, start, nb, keep_all, has_keep, no_keep, design, design_t, inverse,
                   rows, cols, resid, ivar, q_chunk, change, grad, delta, m, lower, theta,
                   theta0, chi2_0, iv_max, t_floor, active, t, work):
    """The s² = 0 evaluation of every pixel of the block (weights ivar): θ̂(0) into theta and
    theta0 (nb, P) and its residuals into resid (nb, n_stars); χ²(0), the largest ivar and the
    floor of t = ln s² below which s² is negligible (nb,); and, where P'(0) > 0, active and the
    starting t from the moment estimate Σ ivar² (r² - 1/ivar) / Σ ivar² (s² in
    normalised-flux units squared). normal0 (n_monomials, n_pix): the monomial sums at s² = 0
    (the caller's product). Scratch per chunk of pixels: q_chunk, change (chunk, n_stars),
    grad, delta (chunk, P); m (P, P). Returns False if a normal matrix is singular."""
    n_terms, n_stars = design_t.shape
    chunk = q_chunk.shape[0]
    N = 78                                                    # 'N'
    for c0 in range(0, nb, chunk):
        nc = min(chunk, nb - c0)
        for i in range(nc):
            _product(ivar[c0 + i], resid[c0 + i], q_chunk[i])
        _gemm(N, N, nc, n_terms, n_stars, 1.0, q_chunk, n_stars, design, n_terms, 0.0, grad,
              n_terms, work)
        for i in range(nc):
            p = c0 + i
            keep = keep_all[start + p] if has_keep else no_keep
            if not _factor(normal0[:, start + p], inverse, rows, cols, keep, has_keep, m,
                           lower[p]):
                return False
            _mask(grad[i], keep, has_keep)
            _chol_solve(lower[p], grad[i], delta[i])
            theta[p] += delta[i]
        _gemm(N, N, nc, n_stars, n_terms, 1.0, delta, n_terms, design_t, n_stars, 0.0, change,
              n_stars, work)
        for i in range(nc):
            p = c0 + i
            sq, sw, chi2, sw2, largest = _update_first(resid[p], change[i], ivar[p])
            theta0[p] = theta[p]
            chi2_0[p] = chi2
            iv_max[p] = largest
            t_floor[p] = math.log(1e-10 / max(largest, 1e-300))
            first = 0.5 * (sq - sw)
            if first > 0:
                active[p] = True
                t[p] = math.log(2 * first / max(sw2, 1e-300))
    return True


@_jit(inline=True)
def _choose_evaluations(active, need_full, t, t_factor, iv_max, cheap_change, members,
                        cheap_members):
    """Sort the active pixels of a Newton iteration into those evaluated fully (members) and
    cheaply (cheap_members, (nb,) int64 each): cheaply when the last cheap evaluation left θ
    converged and the weights changed by less than cheap_change (relative) since the pixel's
    last full evaluation. Returns how many of each."""
    n_full = 0
    n_cheap = 0
    for p in range(active.size):
        if not active[p]:
            continue
        weight_change = _change(math.exp(t[p]), math.exp(t_factor[p]), iv_max[p])
        if not need_full[p] and weight_change < cheap_change:
            cheap_members[n_cheap] = p
            n_cheap += 1
        else:
            members[n_full] = p
            n_full += 1
    return n_full, n_cheap


@_jit(inline=True)
def _full_evaluations(members, n_full, start, keep_all, has_keep, no_keep, design, design_t,
                      monomials_t, inverse, rows, cols, resid, ivar, t, w_set, q_chunk, change,
                      flat, grad, delta, m, lower, step_theta, theta, slope, d1, d2, work):
    """Full evaluations of pixels members[:n_full] at s² = exp(t): their normal matrices
    (n_full, P, P) from one product (weights w_set (n_full, n_stars) @ monomials_t (n_stars,
    n_monomials) into flat), Cholesky factors into lower, one refinement step of θ (and resid),
    P' into d1, P'' into d2 (per unit s²) and dθ̂/ds² = -M⁻¹c into slope (n_pix of the block,
    P). Returns False if a normal matrix is singular."""
    n_terms, n_stars = design_t.shape
    n_mono = monomials_t.shape[1]
    chunk = q_chunk.shape[0]
    N = 78                                                    # 'N'
    for i in range(n_full):
        p = members[i]
        _weights(ivar[p], math.exp(t[p]), w_set[i])
    _gemm(N, N, n_full, n_mono, n_stars, 1.0, w_set, n_stars, monomials_t, n_mono, 0.0,
          flat, n_mono, work)
    for c0 in range(0, n_full, chunk):
        nc = min(chunk, n_full - c0)
        for i in range(nc):
            _product(w_set[c0 + i], resid[members[c0 + i]], q_chunk[i])
        _gemm(N, N, nc, n_terms, n_stars, 1.0, q_chunk, n_stars, design, n_terms, 0.0,
              grad, n_terms, work)
        for i in range(nc):
            p = members[c0 + i]
            keep = keep_all[start + p] if has_keep else no_keep
            if not _factor(flat[c0 + i], inverse, rows, cols, keep, has_keep, m, lower[p]):
                return False
            _mask(grad[i], keep, has_keep)
            _chol_solve(lower[p], grad[i], delta[i])
            theta[p] += delta[i]
        _gemm(N, N, nc, n_stars, n_terms, 1.0, delta, n_terms, design_t, n_stars, 0.0,
              change, n_stars, work)
        for i in range(nc):
            p = members[c0 + i]
            sq, sw, sw2, spq = _update_second(resid[p], change[i], w_set[c0 + i], q_chunk[i])
            d1[p] = 0.5 * (sq - sw)
            d2[p] = 0.5 * sw2 - spq
        _gemm(N, N, nc, n_terms, n_stars, 1.0, q_chunk, n_stars, design, n_terms, 0.0,
              grad, n_terms, work)                          # c = Σ w² r ℓ
        for i in range(nc):
            p = members[c0 + i]
            keep = keep_all[start + p] if has_keep else no_keep
            _mask(grad[i], keep, has_keep)
            _chol_solve(lower[p], grad[i], step_theta)      # M⁻¹ c = -dθ̂/ds²
            cy = 0.0
            for j in range(n_terms):
                cy += grad[i, j] * step_theta[j]
                slope[p, j] = -step_theta[j]
            d2[p] += cy
    return True


@_jit(inline=True)
def _predict_theta(cheap_members, c0, nc, live_members, design_t, resid, ivar, t, t_theta,
                   t_factor, iv_max, slope, d2_factor, theta, delta, limit, w_chunk, q_chunk,
                   change, d2, converged, work):
    """The first part of a cheap evaluation of the chunk's pixels cheap_members[c0:c0 + nc]
    (copied into live_members): their weights at s² = exp(t) into w_chunk, θ̂ predicted to
    first order (θ += dθ̂/ds² × the change of s² since θ was θ̂) with the residuals, and w r
    into q_chunk; limit (chunk,): the largest θ step at which the refinement counts θ as
    converged (each step shrinks θ's error by at most the weight change since the factor,
    plus rounding); d2: P'' of the last full evaluation."""
    n_terms, n_stars = design_t.shape
    N = 78                                                    # 'N'
    for i in range(nc):
        p = cheap_members[c0 + i]
        live_members[i] = p
        s_new = math.exp(t[p])
        _weights(ivar[p], s_new, w_chunk[i])
        shift = s_new - math.exp(t_theta[p])
        largest = 0.0
        for j in range(n_terms):
            delta[i, j] = slope[p, j] * shift
            theta[p, j] += delta[i, j]
            largest = max(largest, abs(theta[p, j]))
        contraction = _change(s_new, math.exp(t_factor[p]), iv_max[p]) + 1e-4
        limit[i] = 1e-10 * largest / contraction
        d2[p] = d2_factor[p]
        converged[p] = False
    _gemm(N, N, nc, n_stars, n_terms, 1.0, delta, n_terms, design_t, n_stars, 0.0,
          change, n_stars, work)
    for i in range(nc):
        _update(resid[live_members[i]], change[i], w_chunk[i], q_chunk[i])


@_jit(inline=True)
def _refine_theta(live_members, nc, start, keep_all, has_keep, no_keep, design, design_t,
                  lower, resid, theta, grad, delta, limit, w_chunk, q_chunk, change, d1,
                  converged, counters, flop_vec, work):
    """The refinement steps of a cheap evaluation, θ ← θ + M⁻¹ Σ w r ℓ with the factor of the
    pixel's last full evaluation (at most 4): a pixel leaves the chunk's live set
    (live_members[:nc], compacted in place with its limit, w_chunk and q_chunk rows) as soon
    as its step is at most its limit; P' of each step into d1."""
    n_terms, n_stars = design_t.shape
    N = 78                                                    # 'N'
    live = nc
    for _ in range(4):
        _gemm(N, N, live, n_terms, n_stars, 1.0, q_chunk, n_stars, design, n_terms,
              0.0, grad, n_terms, work)
        for i in range(live):
            p = live_members[i]
            keep = keep_all[start + p] if has_keep else no_keep
            _mask(grad[i], keep, has_keep)
            _chol_solve(lower[p], grad[i], delta[i])
            biggest = 0.0
            for j in range(n_terms):
                theta[p, j] += delta[i, j]
                biggest = max(biggest, abs(delta[i, j]))
            converged[p] = biggest <= limit[i]
        _gemm(N, N, live, n_stars, n_terms, 1.0, delta, n_terms, design_t, n_stars,
              0.0, change, n_stars, work)
        counters[2] += live
        counters[3] += live * 2 * flop_vec
        kept = 0
        for i in range(live):
            p = live_members[i]
            sq, sw = _update(resid[p], change[i], w_chunk[i], q_chunk[i])
            d1[p] = 0.5 * (sq - sw)
            if not converged[p]:
                if kept != i:
                    live_members[kept] = p
                    limit[kept] = limit[i]
                    w_chunk[kept] = w_chunk[i]
                    q_chunk[kept] = q_chunk[i]
                kept += 1
        live = kept
        if live == 0:
            break


@_jit(inline=True)
def _newton_steps(active, converged, need_full, t, t_theta, lo, hi, d1, d2, t_floor, theta,
                  theta0, design_t, resid, step_theta, tolerance, loglike_tolerance):
    """The Newton step in t = ln s² of every active pixel whose θ converged (the others get a
    full evaluation next time): a pixel whose step is done, or that heads to s² = 0 (then
    back to θ̂(0) and its residuals), stops being active."""
    n_terms = design_t.shape[0]
    for p in range(active.size):
        if not active[p]:
            continue
        t_theta[p] = t[p]
        need_full[p] = not converged[p]
        if need_full[p]:
            continue
        new, done, to_zero = _newton_step(p, t, lo, hi, d1, d2, t_floor, tolerance,
                                          loglike_tolerance)
        if done or to_zero:
            if to_zero and not done:
                for j in range(n_terms):
                    step_theta[j] = theta0[p, j] - theta[p, j]
                    theta[p, j] = theta0[p, j]
                _subtract_rows(design_t, step_theta, resid[p])
                t[p] = -np.inf
            active[p] = False
        else:
            t[p] = new


@_jit(inline=True)
def _newton_search(start, keep_all, has_keep, no_keep, design, design_t, monomials_t, inverse,
                   rows, cols, tolerance, loglike_tolerance, max_iter, cheap_change, counters,
                   resid, ivar, w_set, q_chunk, w_chunk, change, lower, theta, theta0, t,
                   t_floor, iv_max, active, work):
    """The Newton iterations in t = ln s² of the block's active pixels after the s² = 0
    evaluation (solve_block's arrays, same names), at most max_iter: every active pixel is
    evaluated once per iteration, fully (a new normal matrix) or cheaply (refinement from the
    last factor, chunk by chunk), then takes its Newton step. Per pixel, of its last full
    evaluation: t_factor, P'' (d2_factor) and dθ̂/ds² (slope); t_theta: the t at which θ is
    θ̂ now; need_full: its last cheap evaluation left θ unconverged. Returns the number of
    iterations, or -1 if a normal matrix is singular."""
    nb = t.size
    n_terms, n_stars = design_t.shape
    n_mono = monomials_t.shape[1]
    chunk = q_chunk.shape[0]
    flat = np.empty((nb, n_mono))
    grad = np.empty((chunk, n_terms))
    delta = np.empty((chunk, n_terms))
    m = np.empty((n_terms, n_terms))
    step_theta = np.empty(n_terms)
    members = np.empty(nb, dtype=np.int64)
    cheap_members = np.empty(nb, dtype=np.int64)
    live_members = np.empty(chunk, dtype=np.int64)
    limit = np.empty(chunk)
    d1 = np.zeros(nb)
    d2 = np.zeros(nb)
    converged = np.ones(nb, dtype=np.bool_)
    slope = np.zeros((nb, n_terms))
    lo = np.full(nb, -np.inf)
    hi = np.full(nb, np.inf)
    t_factor = np.full(nb, np.nan)
    t_theta = np.full(nb, np.nan)
    d2_factor = np.zeros(nb)
    need_full = np.zeros(nb, dtype=np.bool_)
    flop_build = 2.0 * n_stars * n_mono
    flop_vec = 2.0 * n_stars * n_terms      # one (pixel × stars) @ (stars × terms) product
    n_iter = 0
    while n_iter < max_iter:
        n_full, n_cheap = _choose_evaluations(active, need_full, t, t_factor, iv_max,
                                              cheap_change, members, cheap_members)
        if n_full + n_cheap == 0:
            break
        n_iter += 1
        if n_full:
            counters[0] += n_full
            counters[3] += n_full * (flop_build + 3 * flop_vec)
            if not _full_evaluations(members, n_full, start, keep_all, has_keep, no_keep,
                                     design, design_t, monomials_t, inverse, rows, cols, resid,
                                     ivar, t, w_set, q_chunk, change, flat, grad, delta, m,
                                     lower, step_theta, theta, slope, d1, d2, work):
                return -1
            for i in range(n_full):
                p = members[i]
                t_factor[p] = t[p]
                d2_factor[p] = d2[p]
                converged[p] = True
        if n_cheap:
            counters[1] += n_cheap
            counters[3] += n_cheap * flop_vec
            for c0 in range(0, n_cheap, chunk):     # θ converges chunk by chunk
                nc = min(chunk, n_cheap - c0)
                _predict_theta(cheap_members, c0, nc, live_members, design_t, resid, ivar, t,
                               t_theta, t_factor, iv_max, slope, d2_factor, theta, delta,
                               limit, w_chunk, q_chunk, change, d2, converged, work)
                _refine_theta(live_members, nc, start, keep_all, has_keep, no_keep, design,
                              design_t, lower, resid, theta, grad, delta, limit, w_chunk,
                              q_chunk, change, d1, converged, counters, flop_vec, work)
        _newton_steps(active, converged, need_full, t, t_theta, lo, hi, d1, d2, t_floor, theta,
                      theta0, design_t, resid, step_theta, tolerance, loglike_tolerance)
    return n_iter


@_jit(inline=True)
def _store_results(start, nb, t, chi2_0, iv_max, resid, ivar, theta, theta0, theta_out,
                   s2_out, loglike_out):
    """θ, s² and ln L of the block's pixels into theta_out (n_pix, P), s2_out, loglike_out
    (n_pix,) at rows start …; ln L at the s² found, or s² = 0 and θ̂(0) where that is
    better."""
    for p in range(nb):
        j = start + p
        s2 = math.exp(t[p])
        loglike = -0.5 * chi2_0[p]
        if s2 > 0:
            k = int(min(max(280 / max(math.log10(1.0 + s2 * iv_max[p]), 1e-3), 1), 64))
            value = _loglike(resid[p], ivar[p], s2, k)
            if value < loglike:
                theta[p] = theta0[p]
                s2 = 0.0
            else:
                loglike = value
        theta_out[j] = theta[p]
        s2_out[j] = s2
        loglike_out[j] = loglike


@_jit()
def solve_block(flux, ivar_all, normal0, start, nb, keep_all, has_keep, design, design_t,
                monomials_t, inverse, rows, cols, tolerance, loglike_tolerance, max_iter,
                cheap_change, theta_out, s2_out, loglike_out, counters, resid, ivar, w_set,
                q_chunk, w_chunk, change, lower):
    """θ, s², ln L of pixels start … start + nb - 1 of flux, ivar_all (n_stars, n_pix)
    C-contiguous into theta_out (n_pix, P), s2_out, loglike_out (n_pix,); normal0
    (n_monomials, n_pix): the monomial sums of the normal matrices at s² = 0 (monomials @ ivar,
    one large product for all pixels).

    design (n_stars, P), design_t its transpose, monomials_t (n_stars, n_monomials), all
    C-contiguous; inverse, rows, cols: M's upper-triangle entries (rows[k], cols[k]) are
    monomial inverse[k]; keep_all (n_pix, P) bool (used if has_keep). Work space, reused from
    block to block (a fresh allocation per call costs page faults, ≈ 0.1 s per training):
    resid, ivar, w_set (≥nb, n_stars); q_chunk, w_chunk, change (chunk, n_stars), where chunk is
    the number of pixels whose element-wise chain runs together (their rows should fit the L2
    cache); lower (≥nb, P, P). counters (5,)
    accumulate normal-matrix builds, cheap evaluations, their refinement steps and the flops of
    the matrix products, and keep the most Newton iterations of a block. Returns 0, or SINGULAR.
    """
    n_terms, n_stars = design_t.shape
    chunk = q_chunk.shape[0]
    work = np.empty(8, dtype=np.int32)
    _gather_block(flux, ivar_all, start, nb, resid, ivar)
    # per-pixel state: θ, θ̂(0), t = ln s², χ²(0), the largest ivar, the floor of t, and whether
    # the pixel is still searching; scratch per chunk of pixels (the search has its own)
    theta = np.zeros((nb, n_terms))
    theta0 = np.empty((nb, n_terms))
    t = np.full(nb, -np.inf)
    chi2_0 = np.empty(nb)
    iv_max = np.empty(nb)
    t_floor = np.empty(nb)
    active = np.zeros(nb, dtype=np.bool_)
    grad = np.empty((chunk, n_terms))
    delta = np.empty((chunk, n_terms))
    m = np.empty((n_terms, n_terms))
    no_keep = np.ones(n_terms, dtype=np.bool_)
    flop_vec = 2.0 * n_stars * n_terms      # one (pixel × stars) @ (stars × terms) product
    counters[0] += nb
    counters[3] += nb * 2 * flop_vec         # the s² = 0 build is the caller's product
    if not _solve_at_zero(normal0, start, nb, keep_all, has_keep, no_keep, design, design_t,
                          inverse, rows, cols, resid, ivar, q_chunk, change, grad, delta, m,
                          lower, theta, theta0, chi2_0, iv_max, t_floor, active, t, work):
        return SINGULAR
    n_iter = _newton_search(start, keep_all, has_keep, no_keep, design, design_t, monomials_t,
                            inverse, rows, cols, tolerance, loglike_tolerance, max_iter,
                            cheap_change, counters, resid, ivar, w_set, q_chunk, w_chunk,
                            change, lower, theta, theta0, t, t_floor, iv_max, active, work)
    if n_iter < 0:
        return SINGULAR
    _store_results(start, nb, t, chi2_0, iv_max, resid, ivar, theta, theta0, theta_out, s2_out,
                   loglike_out)
    counters[4] = max(counters[4], n_iter)
    return 0
