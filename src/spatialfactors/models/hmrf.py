"""SpiceMix: the NMF hidden Markov random field of Chidester et al. (2023), on arrays.

Model (Methods, eqs. 1-6): the expression ``y_i`` of cell ``i`` (G genes) is ``M x_i`` plus
Gaussian noise ``sigma_y`` (eq. 4, ``U_y``), with metagenes ``M`` (G x K, columns on the
simplex) and latent state ``x_i >= 0`` with an exponential prior ``lambda_x ||x_i||_1``
(eq. 5). Neighbouring cells interact through their proportions ``z_i = x_i / ||x_i||_1``:
``U_x = z_i^T S z_j`` with the symmetric spatial affinity ``S = Sigma_x^-1`` (eq. 4), which
has a Gaussian prior ``lambda_Sigma ||S||_F^2`` (eq. 6).

Fitting (Algorithm 1, with the updates the authors' supplement and code specify, see
``SPICEMIX_NOTES``): k-means on the expression gives the first ``M``; ``T0`` alternations of
non-negative least squares for ``X`` and the simplex program for ``M``; ``sigma_y`` from the
residual; ``S = 0``. Then every iteration:

1. ``X`` by iterated conditional modes on eq. 9: with the neighbours fixed, cell ``i``
   minimises ``||y_i - s M z||^2 / (2 sigma_y^2) + lambda_x s + z^T S nu_i`` over its scale
   ``s >= 0`` (closed form) and proportions ``z`` on the simplex (a K-dimensional quadratic
   program solved exactly, :func:`~spatialfactors.models.qp.batched_qp`), alternated until
   the states move by less than 1e-6 of the largest scale (every alternation lowers eq. 9);
   ``nu_i`` is the sum of the neighbours' proportions. Cells of one colour of a greedy
   colouring of the graph share no edge, so each colour class is one batched update (on the
   CPU the whole alternation of the batch runs compiled, ``models._cellmap``).
2. ``M`` by its quadratic program with columns on the simplex (eq. 12, metagene part),
   solved exactly through its dual (:func:`~spatialfactors.models.qp.simplex_columns_qp`).
3. ``sigma_y^2`` in closed form, the mean squared residual.
4. ``S`` by quasi-Newton steps (or the reference's Adam) on the pseudo-likelihood objective (eqs. 7, 12)
   ``L(S) = (1/|E|) sum_i [z_i^T S nu_i + log C(S nu_i)] + lambda_Sigma ||S||_F^2`` with the
   partition function ``C(eta)`` of the simplex computed exactly
   (:func:`log_simplex_integral`), ``|E|`` the number of (directed) edges, gradients
   symmetrised, the mean of ``S`` removed after each step (it does not change the
   likelihood), and the best ``S`` kept. By default (``neutral_affinity``) ``S`` is
   constrained to prefer no metagene in the mean neighbourhood ``v = mean_i nu_i``
   (``S v = c 1``, a linear constraint, so ``L`` stays convex; :func:`neutral_projection`
   maps any ``S`` onto it and the optimiser works through that map): without a singleton term in
   the model, an unconstrained ``S`` also encodes how common each metagene is, and
   alternating MAP updates turn that into a runaway (classification EM's bias towards the
   largest cluster): the commonest metagene absorbs the others over the iterations.

Every update minimises its own objective exactly (or, for ``S``, never accepts a worse
point), so the ``energy`` of eq. 9 does not increase in step 1 and the pseudo-posterior
``objective`` of eq. 12 does not increase in steps 2-4.

That is the paper's scheme (``prior_from="map"``). It does not keep what it finds on data
unlike the paper's simulation: the MAP states of step 1 are pulled towards their neighbours by
``S`` itself, the pseudo-likelihood estimate of step 4 on those smoothed states is larger than
the ``S`` that generated the data, the next states are smoother still, and so on. ``||S||_F``
grows at every iteration (20 -> 50-90 on STARmap, osmFISH and DLPFC 151510) and a few
metagenes take over the cells (effective number 10 -> 4-5 of K = 10). The authors' code does
the same when run to its default 200 iterations. The default (``prior_from="data"``) builds the
prior from what the data alone say, an empirical-Bayes version of the same model: each
iteration first fits every cell's proportions to its own expression with the current ``M``
(non-negative least squares, no spatial term); ``S`` is step 4's estimate on these data-only
states, which do not depend on ``S``, so it cannot feed on itself; and every cell's state is
its MAP (step 1's program) with ``nu_i`` summed over its neighbours' data-only states, all
cells in one batch; then steps 2 and 3. ``||S||_F`` then settles within a few iterations and the
metagenes stay in use (``benchmarks/results/spatial_domains.md``). Each step still solves its
own program exactly, but the objectives of eqs. 9 and 12 are no longer monotone over
iterations. The history records the number of metagenes in use (:func:`usage`).

Fields of view share ``M``, ``S`` and
``sigma_y``; each has its own graph (a block-diagonal adjacency). Cells without neighbours
have no spatial term: for them the model is NMF with an L1 prior.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scanpy import logging as logg

from ._cellmap import cell_map
from ._logpartition import LogSimplexIntegral, log_simplex_integral_grad
from ._operator import DataOperator, _to_torch_csr, resolve_dtype
from ._progress import iteration_bar, relative_change, report_stop
from ._quasinewton import curvature_estimate, minimize
from ._threads import one_thread
from .qp import (
    _max_pivots,
    _pivot_tolerance,
    batched_qp,
    batched_qp_cvxpy,
    simplex_columns_qp,
    simplex_columns_qp_cvxpy,
)

SOLVERS = ("fast", "cvxpy")
_FLOATS = (torch.float32, torch.float64)
PRIORS = ("data", "map")  # what the spatial prior is built from
INITS = ("kmeans", "leiden")  # the start's clustering
QP_CHUNK = 65_536  # cells per batched program (bounds the solver's working memory)
KMEANS_CELLS = 20_000  # cells the k-means start is fitted on (all of them below this number)
#: Cells the affinity's pseudo-likelihood is evaluated on (a fixed random subset above this number):
#: S has K^2 entries, so 200,000 cells estimate it to far below its noise, and the log-partition
#: kernel, evaluated ~12 times per iteration, was 40% of an iteration at 10^5 cells.
AFFINITY_CELLS = 200_000
#: The affinity step stops when its next quasi-Newton step predicts a decrease of L(S) below this
#: fraction of |L|; L itself moves by far more between iterations. On STARmap (K = 20, seeds 0-2,
#: lambda_Sigma 1e-4 and 1e-3), 1e-9 takes 17-20% fewer evaluations of the log-partition kernel
#: than 1e-10 and gives five of six fits to the same iterations, ARI and objective (8 digits); the
#: sixth takes one more iteration to an objective 1e-6 (relative) lower. 1e-8 moves DLPFC fits.
AFFINITY_FTOL = 1e-9


def log_simplex_integral(eta: torch.Tensor) -> torch.Tensor:
    """``log C(eta)``, ``C(eta) = integral over the simplex of exp(-eta^T z) dz``, for every row.

    Differentiable: ``d log C / d eta = -E[z]`` under the density proportional to
    ``exp(-eta^T z)`` on the simplex. On the CPU a compiled kernel computes the value and the
    gradient together (``models._logpartition``, 15-30x faster than autograd); on other
    devices :func:`log_simplex_integral_torch` runs. Both use the same positive arithmetic.

    Parameters
    ----------
    eta
        (n, K) real tensor.

    Returns
    -------
    (n,) tensor.

    Examples
    --------
    >>> import math, torch
    >>> from spatialfactors.models.hmrf import log_simplex_integral
    >>> out = log_simplex_integral(torch.zeros(1, 3, dtype=torch.float64))
    >>> round(float(out[0]), 12) == round(-math.log(2), 12)
    True
    """
    if eta.ndim != 2:
        raise ValueError(f"`eta` must be (n, K), got shape {tuple(eta.shape)}.")
    if eta.device.type == "cpu":
        return LogSimplexIntegral.apply(eta)
    return log_simplex_integral_torch(eta)


def log_simplex_integral_torch(eta: torch.Tensor) -> torch.Tensor:
    """:func:`log_simplex_integral` in torch operations (any device; autograd for the gradient).

    ``C(eta)`` is the divided difference of ``exp`` at the nodes ``-eta`` (Hermite-Genocchi),
    the corner entry of the exponential of the bidiagonal matrix with the nodes on the
    diagonal and ones above it (Opitz 1964). After shifting the nodes to ``d = max(eta) - eta
    >= 0`` that matrix has no negative entries, so its Taylor series and repeated squaring
    (McCurdy, Ng & Parlett 1984) involve no cancellation: accurate to rounding for equal,
    nearly equal or widely spread ``eta`` alike. Measure: Lebesgue on the first K - 1
    coordinates (the simplex has volume 1/(K-1)!).
    """
    n, k = eta.shape
    top = eta.max(1, keepdim=True).values
    d = top - eta
    dmax = float(d.detach().max()) if d.numel() else 0.0
    squarings = max(0, math.ceil(math.log2(dmax))) if dmax > 1 else 0
    h = 2.0**-squarings
    dh = d * h
    eye = torch.eye(k, dtype=eta.dtype, device=eta.device).expand(n, k, k)
    # Horner: exp(T) ~ I + T (I + T/2 (I + ...)), T = diag(dh) + h * superdiagonal; entries of
    # T are in [0, 1], so K + 17 terms are exact to float64 rounding for every entry.
    pad = torch.zeros(n, 1, k, dtype=eta.dtype, device=eta.device)
    e = eye
    for j in range(k + 17, 0, -1):
        e = eye + (dh[:, :, None] * e + h * torch.cat([e[:, 1:, :], pad], 1)) / j
    log_scale = torch.zeros(n, dtype=eta.dtype, device=eta.device)
    for _ in range(squarings):
        e = e @ e
        mx = e.amax((1, 2))
        e = e / mx[:, None, None]
        log_scale = 2 * log_scale + torch.log(mx)
    return -top[:, 0] + log_scale + torch.log(e[:, 0, k - 1])


@dataclass
class HMRFResult:
    """Result of :func:`fit_hmrf`.

    Attributes
    ----------
    X
        (N, K) latent states ``x_i = s_i z_i`` in units of the rescaled data.
    M
        (G, K) metagenes, columns on the simplex.
    affinity
        (K, K) symmetric spatial affinity ``Sigma_x^-1``.
    sigma_y
        Noise standard deviation.
    history
        One row per iteration (0 = after initialisation): ``objective`` (eq. 12, negative log
        pseudo-posterior), ``energy`` (eq. 9, what the X update minimises), ``rss``,
        ``sigma_y``, ``affinity_loss`` (``L(S)`` on the MAP states), ``effective_metagenes`` and
        ``max_proportion`` (:func:`usage`), ``affinity_norm`` (``||S||_F``), ``seconds`` (since
        the start).
    scale
        Factor applied to each group's expression before fitting.
    n_iter
        Iterations run.
    """

    X: np.ndarray
    M: np.ndarray
    affinity: np.ndarray
    sigma_y: float
    history: pd.DataFrame
    scale: np.ndarray
    n_iter: int


def colour_classes(adjacency: sp.spmatrix) -> list[np.ndarray]:
    """Split the nodes into classes of pairwise non-adjacent nodes (greedy colouring, largest first).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from spatialfactors.models.hmrf import colour_classes
    >>> path = sp.diags([1.0, 1.0], [-1, 1], shape=(4, 4))
    >>> [c.tolist() for c in colour_classes(path)]
    [[1, 3], [0, 2]]
    """
    adjacency = sp.csr_matrix(adjacency, copy=True)
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()  # stored zeros are not edges
    graph = nx.from_scipy_sparse_array(adjacency)
    colours = nx.greedy_color(graph, strategy="largest_first")
    labels = np.array([colours[i] for i in range(adjacency.shape[0])], dtype=np.int64)
    return [np.flatnonzero(labels == c) for c in range(labels.max() + 1 if len(labels) else 0)]


def neutral_projection(affinity: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """``affinity`` with no preference for any metagene in the mean neighbourhood.

    With ``v`` the mean of the rows of ``nu`` (the neighbours' summed proportions), the result
    ``S'`` satisfies ``S' v = c 1`` and has mean 0: a symmetric rank-2 correction removes the
    centred part ``r`` of ``S v`` (``S' = S - (r u^T + u r^T) / |v| + (u^T r) u u^T / |v|``,
    ``u = v / |v|``). It is a projection: a neutral ``S`` is returned unchanged.

    Examples
    --------
    >>> import torch
    >>> from spatialfactors.models.hmrf import neutral_projection
    >>> s = torch.tensor([[-2.0, 1.0], [1.0, 0.5]], dtype=torch.float64)
    >>> nu = torch.tensor([[3.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    >>> sv = neutral_projection(s, nu) @ nu.mean(0)
    >>> bool(torch.isclose(sv[0], sv[1]))
    True
    """
    v = nu.mean(0)
    norm = torch.linalg.norm(v).clamp_min(1e-300)
    u = v / norm
    sv = affinity @ v
    r = sv - sv.mean()
    out = affinity - (torch.outer(r, u) + torch.outer(u, r)) / norm + (u @ r) * torch.outer(u, u) / norm
    return out - out.mean()


def _neutral_adjoint(grad: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """Return the gradient with respect to ``S`` of a function of ``neutral_projection(S, nu)`` (symmetric ``S``).

    ``grad`` is the symmetric gradient with respect to the projected matrix. The projection
    is ``P(S) = S - C S Q - Q S C + Q C S Q`` (``C`` the centring matrix, ``Q = u u^T``)
    followed by removing the mean; its adjoint on symmetric matrices is
    ``H - C H Q - Q H C + (u^T H u) (C Q + Q C) / 2`` with ``H`` the mean-free ``grad``.
    """
    v = nu.mean(0)
    u = v / torch.linalg.norm(v).clamp_min(1e-300)
    h = grad - grad.mean()
    hu = h @ u
    chq = torch.outer(hu - hu.mean(), u)  # C H Q
    cq = torch.outer(u - u.mean(), u)  # C Q
    out = h - chq - chq.T + (u @ hu) * 0.5 * (cq + cq.T)
    return 0.5 * (out + out.T)  # exactly symmetric, as the iterates


class _Fit:
    """State and updates of one SpiceMix fit (tensors on one device and dtype)."""

    #: The per-cell MAP alternation in numba on the CPU (``False``: the torch loop, as on other devices).
    compiled_cell_map = True
    #: The affinity's gradient in closed form from the kernel on the CPU (``False``: autograd, as on other devices).
    closed_form_gradient = True

    def __init__(self, y, adjacency, k, *, lambda_x, lambda_sigma, solver, dtype, device, neutral=False, seed=0):
        self.neutral = neutral
        # ``y`` is a dense tensor or a scipy sparse matrix (kept sparse: the data enter only
        # through y @ M, y^T X and ||y||^2, so a sparse panel never becomes an N x G block).
        if sp.issparse(y):
            y = sp.csr_matrix(y, dtype=np.float64)
            self.y_sq = float(y.multiply(y).sum())
            self.y = DataOperator(y, dtype=dtype, device=device)  # staNMF's sparse products (compiled on the CPU)
        else:
            self.y = y
            self.y_sq = float((y.double() ** 2).sum())
        self._ym = (None, None)  # ((M, its version), y @ M): both X steps and the residual of an iteration share it
        self.n, self.g = y.shape
        self.k = k
        self.lambda_x, self.lambda_sigma, self.solver = lambda_x, lambda_sigma, solver
        self.dtype, self.device = dtype, device
        adjacency = sp.csr_matrix(adjacency, dtype=np.float64)
        self.adj = _to_torch_csr(adjacency, dtype, device)
        self._adjacency = adjacency
        self._classes = None  # colour classes of the graph, built on the first ICM sweep
        degree = np.asarray(adjacency.sum(1)).ravel()
        self.has_nb = torch.as_tensor(degree > 0, device=device)
        self.n_edges = float(degree.sum())
        # The cells the affinity is estimated on, and the weight that keeps L(S) on the scale of all of them.
        rows = np.flatnonzero(degree > 0)
        if len(rows) > AFFINITY_CELLS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, AFFINITY_CELLS, replace=False))
            self._pl_rows = torch.as_tensor(rows, device=device)
        else:
            self._pl_rows = self.has_nb
        self._pl_weight = float((degree > 0).sum()) / max(len(rows), 1)
        self.s = torch.zeros(self.n, dtype=dtype, device=device)
        self.z = torch.full((self.n, k), 1.0 / k, dtype=dtype, device=device)
        self.m = torch.zeros(self.g, k, dtype=dtype, device=device)
        self.affinity = torch.zeros(k, k, dtype=dtype, device=device)
        self.sigma2 = 1.0
        self._param = None
        self._adam = None
        self._curvature = curvature_estimate(k * k)  # of L(S), kept across iterations
        self._rss = None  # ((tensor, version) of M, s, z; rss)

    # ---- solvers (fast or cvxpy reference) ----
    def _qp(self, q_mat, alpha, q, simplex, x0):
        if self.solver == "cvxpy":
            out = batched_qp_cvxpy(q_mat.cpu().numpy(), alpha.cpu().numpy(), q.cpu().numpy(), simplex=simplex)
            return torch.as_tensor(out, dtype=self.dtype, device=self.device)
        # In chunks of cells: the active-set solver holds a (K+1) x (K+1) system per instance.
        chunks = [
            batched_qp(
                q_mat,
                alpha[i : i + QP_CHUNK],
                q[i : i + QP_CHUNK],
                simplex=simplex,
                x0=None if x0 is None else x0[i : i + QP_CHUNK],
            )
            for i in range(0, len(q), QP_CHUNK)
        ]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    @property
    def x(self) -> torch.Tensor:
        return self.s[:, None] * self.z

    def y_m(self) -> torch.Tensor:
        """``y @ M`` for the current metagenes (computed once per ``M``)."""
        key = self._ym[0]
        if key is None or key[0] is not self.m or key[1] != self.m._version:
            self._ym = ((self.m, self.m._version), self.y.matmul(self.m) if self.sparse else self.y @ self.m)
        return self._ym[1]

    @property
    def sparse(self) -> bool:
        return isinstance(self.y, DataOperator)

    def y_t(self, x: torch.Tensor) -> torch.Tensor:
        """``y^T @ x``."""
        # (x^T y)^T, not y^T x: BLAS streams y by rows that way, 1.4-7x faster for a thin x.
        return self.y.rmatmul(x.T).T if self.sparse else (x.T @ self.y).T

    def rss(self) -> float:
        # ||y - X M^T||^2 = ||y||^2 - 2 <X, y M> + <X M^T M, X>: no N x G residual. Summed in
        # float64, where the cancellation costs ~1e-16 ||y||^2, far below any residual of real data.
        # The sigma step and the history row of an iteration share it: kept while M, s and z
        # are the same tensors, unmodified (torch counts in-place changes in ``_version``).
        key = tuple((t, t._version) for t in (self.m, self.s, self.z))
        cached = self._rss
        if cached is not None and all(a is b and u == v for (a, u), (b, v) in zip(cached[0], key, strict=True)):
            return cached[1]
        x, q_mat = self.x.double(), (self.m.T @ self.m).double()
        out = max(self.y_sq - 2 * float((x * self.y_m().double()).sum()) + float(((x @ q_mat) * x).sum()), 0.0)
        self._rss = (key, out)
        return out

    # ---- updates ----
    def data_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scales and proportions by non-negative least squares for every cell: the data alone, no prior."""
        q_mat = self.m.T @ self.m
        x = self._qp(q_mat, torch.ones(self.n, dtype=self.dtype, device=self.device), -self.y_m(), False, self.x)
        s = x.sum(1)
        return s, torch.where(s[:, None] > 0, x / s.clamp_min(1e-300)[:, None], self.z)

    def x_plain(self) -> None:
        """Non-negative least squares for every cell (initialisation, no prior, no neighbours)."""
        self.s, self.z = self.data_states()

    def m_step(self) -> None:
        x = self.x
        a, b = x.T @ x, self.y_t(x)
        if self.solver == "cvxpy":
            out = simplex_columns_qp_cvxpy(a.cpu().numpy(), b.cpu().numpy())
            self.m = torch.as_tensor(out, dtype=self.dtype, device=self.device)
        else:
            self.m = simplex_columns_qp(a, b, self.m)

    def sigma_step(self) -> None:
        self.sigma2 = max(self.rss() / (self.n * self.g), 1e-300)

    def _best_scale(self, b, q_mat, z):
        # argmin over s >= 0 of s^2 z^T Q z / (2 sigma^2) - s (b^T z / sigma^2 - lambda_x)
        quad = ((z @ q_mat) * z).sum(1)
        num = (b * z).sum(1) - self.lambda_x * self.sigma2
        return torch.where(quad > 0, num / quad.clamp_min(1e-300), 0.0).clamp_min(0)

    def _cell_map(self, lin, b, q_mat, z, max_inner, rtol):
        # argmin over s >= 0, z on the simplex of ||y - s M z||^2 / (2 sigma^2) + lambda_x s + z^T lin,
        # alternating the closed-form scale and the exact simplex program (each step lowers it).
        # Cells whose state has settled leave the batch: most settle in a few alternations.
        if self.compiled_cell_map and self.solver == "fast" and z.device.type == "cpu" and z.dtype in _FLOATS:
            # Compiled, the same rounds without per-round tensor operations (models._cellmap).
            arrays = (q_mat.numpy(), b.numpy(), lin.numpy(), z.numpy())
            tol, pivots = _pivot_tolerance(z.dtype), _max_pivots(self.k)  # batched_qp's
            out = cell_map(*arrays, self.sigma2, self.lambda_x, tol, pivots, max_inner, rtol)
            if out is not None:
                return torch.from_numpy(out[0]), torch.from_numpy(out[1])
        s, z = self._best_scale(b, q_mat, z), z.clone()
        rows = torch.arange(len(z), device=z.device)
        for _ in range(max_inner):
            sr, zr, br = s[rows], z[rows], b[rows]
            z_new = self._qp(q_mat, sr * sr / self.sigma2, lin[rows] - (sr / self.sigma2)[:, None] * br, True, zr)
            s_new = self._best_scale(br, q_mat, z_new)
            change = (s_new[:, None] * z_new - sr[:, None] * zr).abs().amax(1)
            s[rows], z[rows] = s_new, z_new
            rows = rows[change > rtol * float(s.max().clamp_min(1e-300))]
            if len(rows) == 0:
                break
        return s, z

    def x_icm(self, max_inner: int = 50, rtol: float = 1e-6) -> None:
        """One ICM sweep: every colour class in turn, neighbours fixed at their MAP states (eq. 9)."""
        q_mat = self.m.T @ self.m
        ym = self.y_m()
        if self._classes is None:  # only the paper's ICM needs the colouring (networkx, slow on large graphs)
            self._classes = [
                (torch.as_tensor(c, device=self.device), _to_torch_csr(self._adjacency[c], self.dtype, self.device))
                for c in colour_classes(self._adjacency)
            ]
        for idx, adj in self._classes:
            lin = (adj @ self.z) @ self.affinity  # S nu_i (S symmetric)
            self.s[idx], self.z[idx] = self._cell_map(lin, ym[idx], q_mat, self.z[idx], max_inner, rtol)

    def x_map(self, neighbours: torch.Tensor, max_inner: int = 50, rtol: float = 1e-6) -> None:
        """Every cell's MAP state with the spatial term built from ``neighbours``' proportions (one batch)."""
        lin = (self.adj @ neighbours) @ self.affinity
        self.s, self.z = self._cell_map(lin, self.y_m(), self.m.T @ self.m, self.z, max_inner, rtol)

    def _affinity_loss(self, affinity, z, nu, weight=1.0):
        if self.neutral:
            affinity = neutral_projection(affinity, nu)
        eta = nu @ affinity
        data = (z * eta).sum() + log_simplex_integral(eta).sum()
        return weight * data / self.n_edges + self.lambda_sigma * (affinity**2).sum()

    def _affinity_value_grad(self, affinity, z, nu, weight=1.0) -> tuple[float, torch.Tensor]:
        """``L(S)`` and its symmetric gradient with respect to ``S``."""
        if affinity.device.type != "cpu" or not self.closed_form_gradient:  # autograd
            s = affinity.detach().requires_grad_(True)
            loss = self._affinity_loss(s, z, nu, weight)
            (grad,) = torch.autograd.grad(loss, s)
            return float(loss.detach()), 0.5 * (grad + grad.T)
        # On the CPU the kernel returns d log C / d eta with the value: the gradient in closed
        # form, dL/dA = (w / |E|) nu^T (z + d log C / d eta) + 2 lambda A, with no autograd graph.
        a = neutral_projection(affinity, nu) if self.neutral else affinity
        eta = nu @ a
        logc, dlogc = log_simplex_integral_grad(eta.detach().to(torch.float64).numpy())
        logc, dlogc = torch.from_numpy(logc).to(eta.dtype), torch.from_numpy(dlogc).to(eta.dtype)
        data = float((z * eta).sum()) + float(logc.sum())
        value = weight * data / self.n_edges + self.lambda_sigma * float((a**2).sum())
        grad = (weight / self.n_edges) * (nu.T @ (z + dlogc))
        grad = 0.5 * (grad + grad.T) + 2 * self.lambda_sigma * a
        return value, _neutral_adjoint(grad, nu) if self.neutral else grad

    def affinity_loss(self) -> float:
        if self.n_edges == 0:
            return float(self.lambda_sigma * (self.affinity**2).sum())
        # On the cells of the affinity step (all of them up to AFFINITY_CELLS), weighted to all.
        nu = (self.adj @ self.z)[self._pl_rows]
        with torch.no_grad():
            return float(self._affinity_loss(self.affinity, self.z[self._pl_rows], nu, self._pl_weight))

    def affinity_step(self, optimizer: str, max_steps: int, lr: float, states: torch.Tensor | None = None) -> None:
        """Minimise ``L(S)`` from the current ``S``; the best point seen is kept (never worse).

        ``L`` is evaluated on the proportions ``states`` (default: the current MAP states).
        """
        if self.n_edges == 0 or max_steps == 0:
            return
        states = self.z if states is None else states
        z, w = states[self._pl_rows], self._pl_weight
        nu = (self.adj @ states)[self._pl_rows]
        if optimizer == "lbfgs":
            # L(S) is smooth and convex, and changes little between iterations: quasi-Newton with
            # the curvature of the previous iterations reaches its minimum in a few evaluations.
            def value_grad(s):
                return self._affinity_value_grad(s, z, nu, w)

            found, value, _ = minimize(
                value_grad, self.affinity, self._curvature, max_evals=max_steps, ftol=AFFINITY_FTOL
            )
            best = [value, found]  # the last accepted point: never worse than the start
        else:
            # The reference's optimiser: Adam (lr 1e-2, betas 0.5, 0.99), state kept across iterations.
            param = torch.nn.Parameter(self.affinity.clone())
            best = [float(self._affinity_loss(self.affinity, z, nu, w).detach()), self.affinity.clone()]

            def closure():
                opt.zero_grad()
                loss = self._affinity_loss(param, z, nu, w)
                loss.backward()
                with torch.no_grad():
                    param.grad.copy_(0.5 * (param.grad + param.grad.T))  # stay symmetric
                    if float(loss) < best[0]:
                        best[0], best[1] = float(loss), param.detach().clone()
                return loss

            if self._adam is None:
                self._param = param
                self._adam = torch.optim.Adam([param], lr=lr, betas=(0.5, 0.99))
            else:
                with torch.no_grad():
                    self._param.copy_(self.affinity)
                param = self._param
            opt = self._adam
            last = best[0]
            for step in range(max_steps):
                opt.step(closure)
                with torch.no_grad():
                    param.sub_(param.mean())  # a constant shift of S leaves the likelihood unchanged
                if step % 10 == 9:
                    if last - best[0] <= 1e-9 * (abs(best[0]) + 1):
                        break
                    last = best[0]
        # With the constraint, store the projected matrix: the loss was evaluated at it (comparing
        # the two equal losses could reject it on rounding). Otherwise remove the mean of the best
        # point (likelihood unchanged, prior smaller) unless that is worse.
        if self.neutral:
            best[1] = neutral_projection(best[1], nu)
        else:
            cand = best[1] - best[1].mean()
            with torch.no_grad():
                if float(self._affinity_loss(cand, z, nu, w)) <= best[0]:
                    best[1] = cand
        self.affinity = best[1]

    # ---- objectives ----
    def spatial_energy(self) -> float:
        """``sum over undirected edges of z_i^T S z_j`` (eq. 9)."""
        if self.n_edges == 0:
            return 0.0
        return 0.5 * float(((self.adj @ self.z) @ self.affinity * self.z).sum())

    def record(self, iteration: int, start: float) -> dict:
        rss = self.rss()
        nll_y = rss / (2 * self.sigma2) + 0.5 * self.n * self.g * math.log(self.sigma2)
        prior = self.lambda_x * float(self.s.sum())
        loss = self.affinity_loss()
        return {
            "iteration": iteration,
            "objective": nll_y + prior + self.n_edges * loss,
            "energy": nll_y + prior + self.spatial_energy(),
            "rss": rss,
            "sigma_y": math.sqrt(self.sigma2),
            "affinity_loss": loss,
            **usage(self.z, self.s),
            "affinity_norm": float(torch.linalg.norm(self.affinity)),
            "seconds": time.perf_counter() - start,
        }


def usage(z: torch.Tensor, s: torch.Tensor | None = None) -> dict[str, float]:
    """How many metagenes the cells use: what shows a fit degenerating (one metagene absorbing others).

    ``effective_metagenes`` is the exponential of the entropy of the mean proportions (K when
    every metagene is used equally, 1 when one takes all); ``max_proportion`` is the mean over
    cells of the largest proportion (1/K for uniform mixtures, 1 for one metagene per cell).
    Cells with zero scale ``s`` are left out.

    Examples
    --------
    >>> import torch
    >>> from spatialfactors.models.hmrf import usage
    >>> usage(torch.eye(4, dtype=torch.float64))
    {'effective_metagenes': 4.0, 'max_proportion': 1.0}
    """
    if s is not None:
        z = z[s > 0]
    if len(z) == 0:
        return {"effective_metagenes": 0.0, "max_proportion": 0.0}
    mean = z.mean(0)
    mean = mean / mean.sum().clamp_min(1e-300)
    nz = mean[mean > 0]
    return {
        "effective_metagenes": round(float(torch.exp(-(nz * torch.log(nz)).sum())), 12),
        "max_proportion": round(float(z.max(1).values.mean()), 12),
    }


def group_scale(totals: np.ndarray, codes: np.ndarray, target: float) -> np.ndarray:
    """Factor per group that brings its mean total per cell to ``target`` (the paper: K).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.hmrf import group_scale
    >>> group_scale(np.array([1.0, 3.0, 10.0]), np.array([0, 0, 1]), 4).tolist()
    [2.0, 0.4]
    """
    scale = np.ones(codes.max() + 1)
    for r in range(len(scale)):
        mean = totals[codes == r].mean()
        scale[r] = target / mean if mean > 0 else 1.0
    return scale


def _initial_metagenes(y: np.ndarray, k: int, random_state: int, labels=None, init: str = "kmeans") -> np.ndarray:
    """Cluster means normalised to the simplex: of k-means (Algorithm 1), Leiden or given labels."""
    if labels is None and init == "leiden":
        from ._start import leiden_start

        found = leiden_start(y, k, random_state=random_state, max_cells=KMEANS_CELLS)
        if found is None:
            logg.warning(f"Leiden found fewer than {k} clusters; SpiceMix starts from k-means.")
        else:
            rows, labels = found
            y = y[rows]
    if labels is None:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        # One thread: scikit-learn's Lloyd iterations sum per-thread partial centres, so with
        # more than 256 cells the centres (and the whole fit) would depend on the number of
        # OpenMP threads, which differs between the main process and joblib workers.
        # On large data the centres come from a random subset of cells: k-means' cost grows with
        # N x G x n_init, and 20,000 cells already place K centres well.
        if y.shape[0] > KMEANS_CELLS:
            rng = np.random.default_rng(random_state)
            y = y[np.sort(rng.choice(y.shape[0], KMEANS_CELLS, replace=False))]
        if sp.issparse(y):  # at most KMEANS_CELLS rows; the dense code path, so sparse == dense
            y = y.toarray()
        with threadpool_limits(limits=1):
            centres = KMeans(k, n_init=10, random_state=random_state).fit(y).cluster_centers_.T.clip(0)
    else:
        values, codes = np.unique(np.asarray(labels), return_inverse=True)
        if len(codes) != y.shape[0]:
            raise ValueError(f"`init_labels` has {len(codes)} entries, expected one per cell ({y.shape[0]}).")
        if len(values) != k:
            raise ValueError(
                f"`init_labels` has {len(values)} clusters, expected n_factors = {k}: the metagenes start "
                "as the cluster means (e.g. tune `sc.tl.leiden`'s resolution to get K clusters)."
            )
        centres = np.stack([np.asarray(y[codes == c].mean(0)).ravel() for c in range(k)], 1)
    sums = centres.sum(0)
    return np.where(sums > 0, centres / np.where(sums > 0, sums, 1), 1.0 / y.shape[1])


def fit_hmrf(
    Y,
    adjacency,
    n_factors: int,
    *,
    groups=None,
    lambda_x: float = 1.0,
    lambda_sigma: float = 1e-4,
    max_iter: int = 200,
    tol: float | None = 1e-6,
    init_iter: int = 5,
    affinity_optimizer: str = "lbfgs",
    affinity_steps: int | None = None,
    affinity_lr: float = 1e-2,
    neutral_affinity: bool = True,
    prior_from: str = "data",
    rescale: bool = True,
    random_state: int = 0,
    init_labels=None,
    init: str = "kmeans",
    solver: str = "fast",
    dtype: str = "float64",
    device: str = "cpu",
    callback: Callable[[dict], None] | None = None,
    progress_bar: bool = False,
) -> HMRFResult:
    """Fit SpiceMix to expression ``Y`` on a spatial graph.

    Parameters
    ----------
    Y
        (N, G) non-negative expression (dense or scipy sparse), e.g. log-normalised counts.
    adjacency
        (N, N) symmetric non-negative spatial graph without self-loops (scipy sparse or dense);
        for several fields of view, block diagonal (no edges between them).
    n_factors
        Number of metagenes K.
    groups
        (N,) field of view of every cell; each is rescaled separately. ``None``: one field.
    lambda_x
        Rate of the exponential prior on ``x`` (the paper: 1).
    lambda_sigma
        Weight of the Gaussian prior on the affinity, per edge (see the module docstring).
    max_iter
        Iterations after the initialisation.
    tol
        Stop when the objective changes by less than ``tol`` times its magnitude over an
        iteration; ``None`` runs ``max_iter`` iterations.
    init_iter
        ``T0``, the non-spatial alternations of the initialisation.
    affinity_optimizer
        ``"lbfgs"`` (quasi-Newton, BFGS with the curvature estimate carried over from the
        previous iterations, ``models._quasinewton``: the convex ``L(S)`` is
        minimised to convergence, its value to about 1e-10 relative) or ``"adam"`` (the paper's
        optimiser, a fixed budget of steps per iteration, state kept across iterations).
    affinity_steps, affinity_lr
        Function evaluations (quasi-Newton, default 10; three times as many in the first
        iteration, which builds the curvature estimate) or steps (Adam, default 100) per
        iteration at most; Adam's learning rate. The affinity starts from its previous value
        each iteration, so a few evaluations per iteration suffice (5-7 on STARmap).
    neutral_affinity
        Estimate ``S`` under the constraint that it prefers no metagene in the mean
        neighbourhood ``v`` (``S v`` proportional to the ones vector): the spatial term then
        describes how neighbours differ from the average composition, not how abundant each
        metagene is overall. Without it (``False``, the paper's unconstrained estimate) the
        abundance of the commonest metagene is learned as self-affinity, the MAP states follow
        it, the next estimate of ``S`` grows, and over the iterations that metagene absorbs the
        others; the authors' code does the same when run long enough (its default 200
        iterations on STARmap, 30-40 on the noisier simulated tissues). See the module docstring.
    prior_from
        Which proportions define the spatial prior. ``"data"`` (default, an empirical-Bayes
        version of the paper's scheme): at each iteration every cell's proportions are first
        fitted to its own expression alone (non-negative least squares on the current
        metagenes); ``S`` is the pseudo-likelihood estimate on these data-only states, and each
        cell's state is its MAP under its own expression and the prior ``z^T S nu_i`` with
        ``nu_i`` summed over its neighbours' data-only states (all cells in one batch). ``"map"``
        (the paper, step 1 and 4 above): ``S`` from the MAP states and ICM with the neighbours'
        MAP states. The MAP states are smoothed by ``S`` itself, so an ``S`` fitted to them is
        larger than the one that generated the data, the next states are smoother still, and
        ``||S||`` grows at every iteration until a few metagenes absorb the others (20 -> 50-90
        on STARmap, osmFISH and DLPFC); with ``"data"`` it settles within a few iterations.
    rescale
        Scale each field so that the mean total expression per cell is K (the paper's
        normalisation); the factors are returned in ``scale``.
    random_state
        Seed of the start (k-means or Leiden).
    init_labels
        (N,) labels of a clustering with exactly ``n_factors`` clusters: the metagenes start as
        its normalised cluster means (instead of ``init``).
    init
        ``"kmeans"`` (the paper's Algorithm 1) or ``"leiden"`` (the authors' current code starts
        from Louvain): the clustering whose normalised cluster means start the metagenes, on at
        most :data:`KMEANS_CELLS` cells (``models/_start.py``).
        Falls back to k-means with a warning when Leiden cannot find ``n_factors`` clusters.
    solver
        ``"fast"`` (batched exact active-set programs) or ``"cvxpy"`` (one cvxpy program per
        cell and for the metagenes; the reference, slow).
    dtype, device
        Torch precision and device (``"cuda"`` for a GPU).
    callback
        Called with each history row.
    progress_bar
        Show a progress bar over the iterations (hidden at scanpy verbosity 0) that ends saying whether
        the fit converged, log "SpiceMix converged after N iterations" (info), and warn when it stops
        at ``max_iter`` without converging.

    Returns
    -------
    The fitted model.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from spatialfactors.models.hmrf import fit_hmrf
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.random((40, 3)) @ rng.random((3, 12))
    >>> A = sp.diags([1.0, 1.0], [-1, 1], shape=(40, 40))
    >>> res = fit_hmrf(Y, A, 3, max_iter=3)
    >>> res.X.shape, res.M.shape, bool(np.allclose(res.M.sum(0), 1))
    ((40, 3), (12, 3), True)
    """
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
    if prior_from not in PRIORS:
        raise ValueError(f"`prior_from` must be one of {PRIORS}, got {prior_from!r}.")
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}, got {init!r}.")
    if affinity_optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"`affinity_optimizer` must be 'lbfgs' or 'adam', got {affinity_optimizer!r}.")
    if affinity_steps is None:
        affinity_steps = 10 if affinity_optimizer == "lbfgs" else 100
    tdtype = resolve_dtype(dtype)
    # Sparse data stay sparse (rows rescaled in place of a dense copy); dense data are copied once.
    y = sp.csr_matrix(Y, dtype=np.float64) if sp.issparse(Y) else np.array(Y, dtype=np.float64)
    n, g = y.shape
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    _, codes = np.unique(groups, return_inverse=True)
    totals = np.asarray(y.sum(1)).ravel()
    scale = group_scale(totals, codes, n_factors) if rescale else np.ones(codes.max() + 1)
    if sp.issparse(y):
        y = sp.diags(scale[codes]) @ y
    else:
        y *= scale[codes][:, None]
    start = time.perf_counter()
    bar = iteration_bar(max_iter, "SpiceMix iterations", show=progress_bar)
    with one_thread() if torch.device(device).type == "cpu" else nullcontext(), bar:
        fit = _Fit(
            y if sp.issparse(y) else torch.as_tensor(y, dtype=tdtype, device=device),
            adjacency,
            n_factors,
            lambda_x=lambda_x,
            lambda_sigma=lambda_sigma,
            solver=solver,
            dtype=tdtype,
            device=device,
            neutral=neutral_affinity,
            seed=random_state,
        )
        m0 = _initial_metagenes(y, n_factors, random_state, init_labels, init)
        fit.m = torch.as_tensor(m0, dtype=tdtype, device=device)
        for _ in range(init_iter):
            fit.x_plain()
            fit.m_step()
        if init_iter == 0:
            fit.x_plain()
        fit.sigma_step()
        history = [fit.record(0, start)]
        if callback is not None:
            callback(history[-1])
        it, converged = 0, False
        for it in range(1, max_iter + 1):
            if prior_from == "data":
                own = fit.data_states()[1]
                fit.affinity_step(affinity_optimizer, affinity_steps, affinity_lr, own)
                fit.x_map(own)
                fit.m_step()
                fit.sigma_step()
            else:
                fit.x_icm()
                fit.m_step()
                fit.sigma_step()
                fit.affinity_step(affinity_optimizer, affinity_steps, affinity_lr)
            history.append(fit.record(it, start))
            if callback is not None:
                callback(history[-1])
            if progress_bar:
                bar.update(1)
            prev, cur = history[-2]["objective"], history[-1]["objective"]
            converged = tol is not None and relative_change(prev, cur) <= tol
            if converged:
                break
        if progress_bar:
            change = relative_change(prev, cur) if it else math.nan
            report_stop("SpiceMix", n_iter=it, max_iter=max_iter, tol=tol, change=change, converged=converged, bar=bar)
    return HMRFResult(
        X=fit.x.cpu().numpy(),
        M=fit.m.cpu().numpy(),
        affinity=fit.affinity.cpu().numpy(),
        sigma_y=math.sqrt(fit.sigma2),
        history=pd.DataFrame(history),
        scale=scale,
        n_iter=it,
    )


def fit_bytes(n_obs: int, n_vars: int, *, n_parallel: int = 0, nnz: int | None = None, n_factors: int = 10) -> int:
    """Peak memory (bytes) of :func:`fit_hmrf`, plus one fit per parallel stability replicate.

    Per fit: the data (dense float64: the input's copy, its rescaled copy and the tensor; sparse
    with ``nnz`` stored values: the rescaled CSR matrix, its tensor and its transpose's on a GPU,
    about 40 bytes per value, an upper bound on the CPU, which keeps one working CSR copy), the
    cells x K working arrays and the active-set solver's systems for one
    chunk of :data:`QP_CHUNK` cells.

    Examples
    --------
    >>> from spatialfactors.models.hmrf import fit_bytes
    >>> fit_bytes(1000, 100) > 3 * 1000 * 100 * 8
    True
    >>> fit_bytes(10**6, 500, nnz=5 * 10**7) < fit_bytes(10**6, 500)
    True
    """
    data = 3 * n_obs * n_vars * 8 if nnz is None else 40 * nnz + 24 * n_obs
    working = 32 * n_obs * n_factors * 8 + 8 * min(n_obs, QP_CHUNK) * (n_factors + 1) ** 2 * 8
    return (1 + n_parallel) * (data + working)


def _replicate_task(y, adjacency, k: int, counts: np.ndarray, groups, kwargs: dict) -> np.ndarray:
    columns = np.repeat(np.arange(y.shape[1]), counts)
    return fit_hmrf(y[:, columns], adjacency, k, groups=groups, **kwargs).X.astype(np.float32)


def hmrf_stability(
    Y,
    adjacency,
    n_factors,
    *,
    n_replicates: int = 10,
    groups=None,
    metric: str = "hungarian",
    random_state: int = 0,
    n_jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Bootstrap instability of SpiceMix's latent states for every number of metagenes.

    The staNMF criterion (Cahill et al. 2024) applied to SpiceMix: each replicate resamples
    the genes with replacement (cells and graph unchanged), is fitted, and the replicates'
    latent states (cells x K) are compared pairwise with
    :func:`~spatialfactors.models.stability.instability`. Replicates run through joblib.

    Parameters
    ----------
    Y, adjacency, groups
        As :func:`fit_hmrf`.
    n_factors
        Values of K.
    n_replicates
        Replicates per K (>= 2).
    metric
        ``"hungarian"`` or ``"amari"``.
    random_state
        Seed of the resamples (and of every fit).
    n_jobs
        joblib workers.
    progress
        Called with 1 after every fit.
    **kwargs
        Passed to :func:`fit_hmrf`.

    Returns
    -------
    Table with columns ``method, K, metric, mean, std, n_replicates``.
    """
    from joblib import Parallel, delayed

    from .stability import instability
    from .stanmf import bootstrap_weights

    y = sp.csr_matrix(Y, dtype=np.float64) if sp.issparse(Y) else np.asarray(Y, dtype=np.float64)
    weights = bootstrap_weights(y.shape[1], n_replicates, random_state)
    kwargs = {"random_state": random_state, **kwargs}
    ks = [int(k) for k in n_factors]
    tasks = [delayed(_replicate_task)(y, adjacency, k, w, groups, kwargs) for k in ks for w in weights]
    results = Parallel(n_jobs=-1 if n_jobs is None else n_jobs, return_as="generator")(tasks)
    rows, done = [], []
    for x in results:
        done.append(x)
        if progress is not None:
            progress(1)
        if len(done) == n_replicates:
            inst = instability(done, metric)
            k = ks[len(rows)]
            rows.append(
                {
                    "method": "spicemix",
                    "K": k,
                    "metric": metric,
                    "mean": inst.mean,
                    "std": inst.std,
                    "n_replicates": n_replicates,
                }
            )
            done = []
    return pd.DataFrame(rows)
