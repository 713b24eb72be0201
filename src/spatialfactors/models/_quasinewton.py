"""Quasi-Newton minimisation whose curvature estimate outlives one run (warm-started BFGS).

SpiceMix minimises the affinity's convex objective ``L(S)`` once per iteration, and from one
iteration to the next ``L`` changes little (its minimiser moves by about 2% on STARmap). A fresh
L-BFGS run rebuilds the curvature from a gradient step every time and spends 10-14
evaluations of the log-partition kernel; carrying the curvature estimate over from the
previous runs makes the first step a quasi-Newton one, and a few evaluations reach the
minimiser. Neither scipy's nor torch's (L-)BFGS accepts an initial curvature estimate, hence
this small implementation (Nocedal & Wright 2006, eq. 6.17 for the dense inverse-Hessian
update, Algorithm 7.4 for the limited-memory one, a backtracking Armijo line search: on a
convex function every step has ``s^T y >= 0``, so no Wolfe curvature test is needed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

#: Largest number of unknowns with a dense inverse Hessian (2500: 50 MB in float64, K = 50
#: for a K x K affinity); above it the last :data:`HISTORY` pairs stand in for it (L-BFGS).
DENSE_MAX = 2500
HISTORY = 20
#: A run that starts without a curvature estimate may take this many times ``max_evals``.
FIRST_RUN_FACTOR = 3


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


def _curvature_ok(sy: float, s: torch.Tensor, y: torch.Tensor) -> bool:
    # s^T y > 0 on a strictly convex function; rounding can break it on a flat stretch.
    return sy > 1e-300 and sy > 1e-12 * _dot(s, s) ** 0.5 * _dot(y, y) ** 0.5


class InverseHessian:
    """Dense BFGS estimate of the inverse Hessian, updated from steps ``s`` and gradient changes ``y``.

    Examples
    --------
    >>> import torch
    >>> h = InverseHessian()
    >>> h.update(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))
    >>> h.direction(torch.tensor([2.0, 0.0])).tolist()  # -H g, H = 1/2 along that axis
    [-1.0, -0.0]
    """

    def __init__(self):
        self.h: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.h is None else 1

    def clear(self) -> None:
        self.h = None

    def update(self, s: torch.Tensor, y: torch.Tensor) -> None:
        s, y = s.reshape(-1), y.reshape(-1)
        sy = _dot(s, y)
        if not _curvature_ok(sy, s, y):
            return
        if self.h is None:  # first pair: scale the identity (Nocedal & Wright eq. 6.20)
            self.h = torch.eye(len(s), dtype=s.dtype, device=s.device) * (sy / _dot(y, y))
        rho = 1.0 / sy
        hy = self.h @ y
        # H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded (H symmetric)
        self.h += torch.outer(s, (rho + rho * rho * _dot(y, hy)) * s - rho * hy) - rho * torch.outer(hy, s)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """``-H g`` (``-g`` before the first update)."""
        return -g if self.h is None else -(self.h @ g.reshape(-1)).reshape(g.shape)


class CurvatureMemory:
    """The last ``size`` pairs ``(s, y)`` standing in for the inverse Hessian (L-BFGS).

    Examples
    --------
    >>> import torch
    >>> mem = CurvatureMemory()
    >>> mem.update(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))
    >>> mem.direction(torch.tensor([2.0, 0.0])).tolist()
    [-1.0, -0.0]
    """

    def __init__(self, size: int = HISTORY):
        self.pairs: deque = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.pairs)

    def clear(self) -> None:
        self.pairs.clear()

    def update(self, s: torch.Tensor, y: torch.Tensor) -> None:
        sy = _dot(s, y)
        if _curvature_ok(sy, s, y):
            self.pairs.append((s, y, 1.0 / sy))

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """``-H g`` by the two-loop recursion (``-g`` while the memory is empty)."""
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * _dot(s, q)
            q -= a * y
            alphas.append(a)
        if self.pairs:
            s, y, _ = self.pairs[-1]
            q *= _dot(s, y) / _dot(y, y)  # the usual initial scaling gamma = s^T y / y^T y
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            q += (a - rho * _dot(y, q)) * s
        return -q


def curvature_estimate(n: int) -> InverseHessian | CurvatureMemory:
    """Return a dense inverse Hessian for up to :data:`DENSE_MAX` unknowns, L-BFGS pairs beyond.

    Examples
    --------
    >>> type(curvature_estimate(100)).__name__, type(curvature_estimate(10_000)).__name__
    ('InverseHessian', 'CurvatureMemory')
    """
    return InverseHessian() if n <= DENSE_MAX else CurvatureMemory()


def minimize(
    fun: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    x0: torch.Tensor,
    curvature: InverseHessian | CurvatureMemory,
    *,
    max_evals: int,
    ftol: float = 1e-10,
) -> tuple[torch.Tensor, float, int]:
    """Minimise a smooth convex ``fun`` from ``x0``, updating ``curvature`` in place.

    Parameters
    ----------
    fun
        Returns the value and the gradient at a point.
    x0
        Start.
    curvature
        Estimate from earlier runs on similar functions (may be empty); updated with every step.
    max_evals
        Evaluations of ``fun`` at most (the first, at ``x0``, included);
        :data:`FIRST_RUN_FACTOR` times as many when ``curvature`` is empty.
    ftol
        Stop when the decrease that the next quasi-Newton step predicts, ``g^T H g / 2``, is
        at most ``ftol`` times the value's magnitude.

    Returns
    -------
    The last accepted point (no worse than ``x0``), its value and the number of evaluations.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> fun = lambda x: (float(0.5 * x @ a @ x - x.sum()), a @ x - 1)
    >>> x, f, n = minimize(fun, torch.zeros(2, dtype=torch.float64), InverseHessian(), max_evals=50)
    >>> torch.allclose(x, torch.linalg.solve(a, torch.ones(2, dtype=torch.float64)))
    True
    """
    if not len(curvature):  # the first run builds the estimate from nothing: a larger budget
        max_evals *= FIRST_RUN_FACTOR
    x = x0
    f, g = fun(x)
    evals = 1
    while True:
        d = curvature.direction(g)
        gtd = _dot(g, d)
        if not gtd < 0:  # not a descent direction (a stale estimate): start again from the gradient
            curvature.clear()
            d, gtd = -g, -_dot(g, g)
        if gtd == 0 or (len(curvature) and -0.5 * gtd <= ftol * abs(f)) or evals >= max_evals:
            break
        # A quasi-Newton step has the right length; a first gradient step is kept short.
        t = 1.0 if len(curvature) else min(1.0, 1.0 / float(g.abs().sum()))
        accepted = False
        while evals < max_evals:
            x_new = x + t * d
            f_new, g_new = fun(x_new)
            evals += 1
            if f_new <= f + 1e-4 * t * gtd:  # Armijo (False for NaN)
                accepted = True
                break
            # Minimiser of the quadratic through f, the slope and f_new, kept within [0.1, 0.5] t.
            denom = 2.0 * (f_new - f - gtd * t)
            t_q = -gtd * t * t / denom if denom > 0 else 0.5 * t
            t = min(max(t_q, 0.1 * t), 0.5 * t)
        if not accepted:
            break
        curvature.update(x_new - x, g_new - g)
        x, f, g = x_new, f_new, g_new
    return x, f, evals
