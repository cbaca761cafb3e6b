"""Independent plain-Python arithmetic of the specification's formulas (one tensor, flat lists).

Nothing here imports `lars`: each function is written from the per-implementation section of
`lars-variants.md` (the section is named in the docstring), in Python floats, so that tests can
compare the reference step against numbers derived without the code under test.
"""

from __future__ import annotations

import math

import numpy as np

Vec = list[float]


def norm(x: Vec) -> float:
    return math.sqrt(sum(v * v for v in x))


def axpy(y: Vec, x: Vec, a: float = 1.0) -> Vec:
    """y + a*x."""
    return [yi + a * xi for yi, xi in zip(y, x, strict=True)]


def scale(x: Vec, a: float) -> Vec:
    return [a * xi for xi in x]


def zeros(n: int) -> Vec:
    return [0.0] * n


def assert_close(actual, expected, rtol: float = 1e-12, atol: float = 1e-15) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float).ravel(), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def heavy_ball(w: Vec, v: Vec, u: Vec, s: float, m: float, nesterov: bool = False) -> tuple[Vec, Vec]:
    """Paper / MLPerf / yscv / tf_models classic: `v = m v + s u; w -= v` (nesterov: m v + s u)."""
    v = axpy(scale(v, m), u, s)
    step = axpy(scale(v, m), u, s) if nesterov else v
    return axpy(w, step, -1.0), v


def torch_sgd_tail(w: Vec, v: Vec | None, u: Vec, lr: float, m: float, d: float = 0.0,
                   nesterov: bool = False) -> tuple[Vec, Vec | None]:
    """TORCH_SGD_TAIL (group 2, section 0): copy on the first step, then `m v + (1-d) u`."""
    if m == 0:
        return axpy(w, u, -lr), None
    v = list(u) if v is None else axpy(scale(v, m), u, 1.0 - d)
    step = axpy(u, v, m) if nesterov else v
    return axpy(w, step, -lr), v


def paper(w, g, v, lr, m, wd, eta, eps, excluded=False, nesterov=False):
    """Group 1 section 1 (MLPERF_LARSOptimizer), also mlperf (2a) and yscv (group 2 section 8)."""
    if excluded:
        r, u = 1.0, list(g)
    else:
        wn, gn = norm(w), norm(g)
        r = eta * wn / (gn + wd * wn + eps) if (wn > 0 and gn > 0) else 1.0
        u = axpy(g, w, wd)
    w, v = heavy_ball(w, v, u, lr * r, m, nesterov)
    return w, v, r


def optax(w, g, v, lr, m, wd, eta, eps, nesterov=False):
    """Group 1 section 3: combined norm, `+eps` on the update norm, negative buffer `v = s + m v`."""
    u = axpy(g, w, wd)
    wn, un = norm(w), norm(u)
    r = 1.0 if (wn == 0 or un == 0) else eta * wn / (un + eps)
    s = scale(u, -lr * r)
    v = axpy(s, v, m)
    upd = axpy(s, v, m) if nesterov else v
    return axpy(w, upd), v, r


def mxnet(w, g, v, lr, m_eff, wd_i, eta, eps, lars, rescale=1.0, clip=None):
    """Group 1 section 4a: `lr_i` from the rescaled, unclipped norm; `v = m v - lr_i (wd w + clip(rg))`."""
    wn, gss = norm(w), sum(x * x for x in g)
    lr_i = lr
    if lars and wn > 0 and gss > 0:
        lr_i = lr * eta * wn / (math.sqrt(gss) * rescale + wd_i * wn + eps)
    rg = [rescale * x for x in g]
    if clip:
        rg = [min(max(x, -clip), clip) for x in rg]
    v = [m_eff * vi - lr_i * wd_i * wi - lr_i * gi for vi, wi, gi in zip(v, w, rg, strict=True)]
    return axpy(w, v), v


def tf_models(w, g, v, lr, m, wdx, eta, adapt=True, nesterov=False):
    """Group 1 section 5, classic momentum: `g += wdx w`, r from `||g||`, heavy-ball."""
    g = axpy(g, w, wdx)
    wn, gn = norm(w), norm(g)
    r = eta * wn / gn if (adapt and wn > 0 and gn > 0) else 1.0
    w, v = heavy_ball(w, v, g, lr * r, m, nesterov)
    return w, v, r


def timm(w, g, v, lr, m, d, wd, eta, eps, trust_clip=False, always_adapt=False, nesterov=False):
    """Group 1 section 6 NumPy reference."""
    r = None
    if wd != 0 or always_adapt:
        wn, gn = norm(w), norm(g)
        r = eta * wn / (gn + wn * wd + eps) if (wn > 0 and gn > 0) else 1.0
        if trust_clip:
            r = min(r / lr, 1.0)
        u = scale(axpy(g, w, wd), r)
    else:
        u = list(g)
    w, v = torch_sgd_tail(w, v, u, lr, m, d, nesterov)
    return w, v, r


def larc(w, g, v, lr, m, wd, eta, eps, clip=True, d=0.0, nesterov=False):
    """Group 2 section 1: ratio only if both norms are non-zero; else raw g and no wd."""
    pn, gn = norm(w), norm(g)
    if pn != 0 and gn != 0:
        r = eta * pn / (gn + pn * wd + eps)
        if clip:
            r = min(r / lr, 1.0)
        u = scale(axpy(g, w, wd), r)
    else:
        u = list(g)
    return torch_sgd_tail(w, v, u, lr, m, d, nesterov)


def torchlars(w, g, v, lr, m, wd, eta, eps, d=0.0, nesterov=False):
    """Group 2 section 2: `(pn/den)*eta` if both norms > 0 else 1; wd always added."""
    pn, gn = norm(w), norm(g)
    r = pn / (gn + wd * pn + eps) * eta if (pn > 0 and gn > 0) else 1.0
    return torch_sgd_tail(w, v, scale(axpy(g, w, wd), r), lr, m, d, nesterov)


def bolts(w, g, v, lr, m, wd, eta, eps, d=0.0, nesterov=False):
    """Group 2 section 3: ratio and wd only if `wd != 0` and both norms non-zero."""
    pn, gn = norm(w), norm(g)
    u = list(g)
    if wd != 0 and pn != 0 and gn != 0:
        r = pn / (gn + pn * wd + eps) * eta
        u = scale(axpy(g, w, wd), r)
    return torch_sgd_tail(w, v, u, lr, m, d, nesterov)


def pytorch_optimizer(w, g, v, lr, m, d, wd, eta, ndim, nesterov=False, maximize=False):
    """Group 2 section 4 (4.1.0): ndim > 1 adapted; zero buffer with (1-d) from step 1."""
    if maximize:
        g = scale(g, -1.0)
    u = list(g)
    if ndim > 1:
        pn, gn = norm(w), norm(g)
        den = gn + wd * pn
        r = eta * pn / den if (pn > 0 and den > 0) else 1.0
        u = scale(axpy(g, w, wd), r)
    if m > 0:
        v = axpy(scale(v, m), u, 1.0 - d)
        u = axpy(u, v, m) if nesterov else v
    return axpy(w, u, -lr), v


def moco(w, g, mu, lr, m, wd, eta, adapted):
    """Group 2 section 5: combined norm of `g + wd w`, `mu = m mu + u; w -= lr mu`."""
    u = list(g)
    if adapted:
        u = axpy(g, w, wd)
        pn, un = norm(w), norm(u)
        q = eta * pn / un if (pn > 0 and un > 0) else 1.0
        u = scale(u, q)
    mu = axpy(scale(mu, m), u)
    return axpy(w, mu, -lr), mu


def holocron(w, g, v, lr, m, wd, d=0.0, nesterov=False):
    """Group 2 section 6: no eta; ratio applied outside the (copy-started) buffer of unscaled u."""
    pn, den = norm(w), norm(g)
    u = list(g)
    if wd != 0:
        u = axpy(g, w, wd)
        den = den + wd * pn
    local = 1.0 if (pn == 0 or den == 0) else pn / den
    if m == 0:
        return axpy(w, u, -lr * local), None, local
    v = list(u) if v is None else axpy(scale(v, m), u, 1.0 - d)
    step = axpy(u, v, m) if nesterov else v
    return axpy(w, step, -lr * local), v, local


def tensorlogic(w, g, v, lr, m, wd, eta, name):
    """Group 2 section 7: gradient-only norm; names containing 'b' use lr; wd if wd > 0."""
    adaptive = lr
    if "b" not in name:
        pn, gn = norm(w), norm(g)
        if pn != 0 and gn != 0:
            adaptive = lr * (eta * pn / gn)
    e = axpy(g, w, wd) if wd > 0 else list(g)
    v = axpy(scale(v, m), e, adaptive)
    return axpy(w, v, -1.0), v
