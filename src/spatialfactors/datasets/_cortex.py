"""The SpiceMix paper's simulated mouse cortex (Methods "Generation of simulated data", Fig. 2a-b)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import truncnorm

from spatialfactors._validation import _is_int

# Metagenes in the order of the paper's Fig. 2b: four major-type metagenes, six subtype or
# layer metagenes, three noise metagenes.
METAGENES = (
    "Exc",
    "Inh",
    "Glial-1",
    "Glial-2",
    "L1",
    "L2",
    "L3",
    "L4",
    "Inh-1",
    "Inh-2",
    "noise-1",
    "noise-2",
    "noise-3",
)
CELL_TYPES = ("eL1", "eL2", "eL3", "eL4", "Inh-1", "Inh-2", "Glial-1", "Glial-2")
LAYERS = ("L1", "L2", "L3", "L4")
#: Layer boundaries along x, as fractions of the tissue width (the reference generator's cut-offs).
LAYER_BOUNDS = (0.35, 0.5, 0.75)
#: Share of genes whose values are shared between linked metagenes (paper, Methods).
LINKED_FRACTIONS = {"Inh-1:Inh-2": 0.75, "L1:L2:L3:L4": 0.90, "Exc:Inh": 0.75}
#: The four noise scenarios of Fig. 2d as (sigma_y, sigma_x); the paper does not print their values.
SCENARIOS = ((0.02, 1.0), (0.02, 2.0), (0.04, 1.0), (0.04, 2.0))

_MAJOR, _SUB, _LAYER_WEIGHT, _NOISE = 1.0, 0.6, 0.3, 0.05
# Standard deviation of eta per metagene before scaling by sigma_x (diagonal of Sigma_c).
_SD_SIGNAL, _SD_NOISE = 0.3, 0.09
_GLIA_SCATTERED = 0.07
# Probabilities of the non-scattered types within each layer (rows: layers; the rest is the
# layer's excitatory type).
_LAYER_MIX = {
    "L1": {"Inh-1": 0.1, "Glial-1": 0.5},
    "L2": {},
    "L3": {"Inh-1": 0.1, "Inh-2": 0.3},
    "L4": {"Inh-1": 0.1, "Inh-2": 0.1},
}
_MAX_COVERAGE = 0.5  # random sequential packing jams at ~0.547 of the area covered by disks


def _check_params(n_fovs: int, n_cells: int, n_genes: int, sigma_y: float, sigma_x: float) -> None:
    for name, value, low in (("n_fovs", n_fovs, 1), ("n_cells", n_cells, 1), ("n_genes", n_genes, len(METAGENES))):
        if not _is_int(value):
            raise TypeError(f"`{name}` must be an integer, got {value!r}.")
        if value < low:
            what = f"the number of metagenes ({len(METAGENES)})" if name == "n_genes" else str(low)
            raise ValueError(f"`{name}` must be at least {what}, got {value}.")
    for name, value in (("sigma_y", sigma_y), ("sigma_x", sigma_x)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")


def cortex_proportion_means() -> pd.DataFrame:
    """Mean metagene proportions ``b_c`` of every cell type before normalisation (Fig. 2b).

    Inhibitory neurons and the scattered glial type also carry their current layer's metagene
    (weight 0.3, filled in per cell by :func:`simulate_cortex`); this table shows the layer
    metagene of their first possible layer only for excitatory types and ``Glial-1``.

    Returns
    -------
    Cell types x metagenes table of ``b_c``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> sf.datasets.cortex_proportion_means().loc["eL2", ["Exc", "L2"]].tolist()
    [1.0, 0.6]
    """
    b = pd.DataFrame(0.0, index=list(CELL_TYPES), columns=list(METAGENES))
    b.loc[:, ["noise-1", "noise-2", "noise-3"]] = _NOISE
    for layer in LAYERS:
        b.loc[f"e{layer}", ["Exc", layer]] = _MAJOR, _SUB
    for sub in ("Inh-1", "Inh-2"):
        b.loc[sub, ["Inh", sub]] = _MAJOR, _SUB
    b.loc["Glial-1", ["Glial-1", "L1"]] = _MAJOR, _LAYER_WEIGHT
    b.loc["Glial-2", "Glial-2"] = _MAJOR
    return b


def _metagenes(n_genes: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw M (genes x metagenes), linking genes across related metagenes, columns on the simplex."""
    k = {name: i for i, name in enumerate(METAGENES)}
    shape = np.where([m.startswith("noise") for m in METAGENES], 8.0, 4.0)
    m = rng.gamma(shape, 1.0, size=(n_genes, len(METAGENES)))
    linked = {}
    for group, frac in LINKED_FRACTIONS.items():
        names = group.split(":")
        mask = rng.random(n_genes) < frac
        # Linked genes take the first metagene's value in every metagene of the group.
        for name in names[1:]:
            m[mask, k[name]] = m[mask, k[names[0]]]
        linked[group] = mask
    return m / m.sum(axis=0, keepdims=True), linked


def _place_cells(
    n_cells: int, width: float, height: float, min_distance: float, rng: np.random.Generator
) -> np.ndarray:
    """Uniform positions with a minimum pairwise distance (random sequential addition on a grid)."""
    cell = min_distance / np.sqrt(2)  # at most one point per grid cell
    nx, ny = int(np.ceil(width / cell)) + 1, int(np.ceil(height / cell)) + 1
    grid = -np.ones((nx + 4, ny + 4), dtype=np.int64)  # padded by 2 so neighbourhoods never wrap
    points = np.empty((n_cells, 2))
    n, attempts, max_attempts = 0, 0, 2000 * n_cells
    while n < n_cells:
        if attempts >= max_attempts:
            raise ValueError(
                f"Could only place {n} of {n_cells} cells with `min_distance={min_distance}`; "
                "lower `min_distance` or `n_cells`."
            )
        batch = rng.random((4096, 2)) * (width, height)
        attempts += len(batch)
        for p in batch:
            gx, gy = int(p[0] / cell) + 2, int(p[1] / cell) + 2
            near = grid[gx - 2 : gx + 3, gy - 2 : gy + 3]
            near = near[near >= 0]
            if near.size and np.min(np.sum((points[near] - p) ** 2, axis=1)) < min_distance**2:
                continue
            points[n] = p
            grid[gx, gy] = n
            n += 1
            if n == n_cells:
                break
    return points


def _assign_types(x: np.ndarray, width: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Layer from the x coordinate, then a cell type drawn from that layer's mixture."""
    layer = np.searchsorted(np.asarray(LAYER_BOUNDS) * width, x, side="right")
    types = np.empty(len(x), dtype=object)
    u = rng.random(len(x))
    scattered = rng.random(len(x)) < _GLIA_SCATTERED
    for li, name in enumerate(LAYERS):
        sel = layer == li
        edge = 0.0
        t = np.full(sel.sum(), f"e{name}", dtype=object)
        for label, p in _LAYER_MIX[name].items():
            t[(u[sel] >= edge) & (u[sel] < edge + p)] = label
            edge += p
        types[sel] = t
    types[scattered] = "Glial-2"
    return layer, types


def _hidden_states(types: np.ndarray, layer: np.ndarray, sigma_x: float, rng: np.random.Generator) -> np.ndarray:
    """x_i = s_i v_i with v_i = normalised(b_c + eta_i), eta_i ~ N(0, sigma_x Sigma_c), s_i ~ Gamma(K, 1)."""
    b_table = cortex_proportion_means()
    b = b_table.loc[types].to_numpy().copy()
    # Sparse types take the metagene of the layer they sit in.
    floating = np.isin(types, ["Inh-1", "Inh-2", "Glial-2"])
    b[floating, METAGENES.index("L1") + layer[floating]] = _LAYER_WEIGHT
    sd = np.where([m.startswith("noise") for m in METAGENES], _SD_NOISE, _SD_SIGNAL) * np.sqrt(sigma_x)
    sd = np.broadcast_to(sd, b.shape)
    active = b > 0
    v = np.zeros_like(b)
    if sigma_x > 0:
        # eta is truncated so that b + eta stays non-negative (proportions cannot be negative).
        lower = -b[active] / sd[active]
        v[active] = b[active] + sd[active] * truncnorm.rvs(lower, np.inf, random_state=rng)
    else:
        v[active] = b[active]
    v /= v.sum(axis=1, keepdims=True)
    s = rng.gamma(len(METAGENES), 1.0, size=(len(types), 1))
    return s * v


def simulate_cortex(
    n_fovs: int = 4,
    n_cells: int = 500,
    n_genes: int = 100,
    *,
    sigma_y: float = 0.02,
    sigma_x: float = 1.0,
    min_distance: float | None = None,
    clip_negative: bool = True,
    random_state: int | np.random.Generator | None = 0,
) -> AnnData:
    r"""Simulate the SpiceMix paper's mouse visual cortex tissue.

    Follows Methods "Generation of simulated data" of :cite:`chidester2023spicemix` (Fig. 2a-b):
    a tissue of four vertical layers and eight cell types, a hidden state per cell mixing 13
    metagenes, and Gaussian expression noise,

    .. math::

        \tilde v_i = b_c + \eta_i,\ \eta_i \sim \mathcal N(0, \sigma_x \Sigma_c), \quad
        v_i = \tilde v_i / \textstyle\sum_k \tilde v_{ik}, \quad
        x_i = s_i v_i,\ s_i \sim \mathrm{Gamma}(K, 1), \quad
        y_i = M x_i + e_i,\ e_i \sim \mathcal N(0, \sigma_y^2 I_G).

    Metagenes (columns of ``M``, in the order of Fig. 2b): the major types ``Exc``, ``Inh``,
    ``Glial-1``, ``Glial-2``; the layer metagenes ``L1``-``L4`` and the inhibitory subtypes
    ``Inh-1``, ``Inh-2``; three noise metagenes. Every value is Gamma(4, 1) (noise metagenes
    Gamma(8, 1)) and each column is then normalised to sum to one. Genes are linked as in the
    paper: each gene is linked with probability 0.75 between ``Inh-1`` and ``Inh-2``, 0.9 among
    ``L1``-``L4`` (one shared value for all four) and 0.75 between ``Exc`` and ``Inh``; a linked
    gene has the same value in every metagene of its group before normalisation.

    Cell types: ``eL1``-``eL4`` are excitatory neurons of their layer; ``Inh-1`` and ``Inh-2``
    are inhibitory neurons scattered sparsely over layers 1, 3, 4 (``Inh-1``) and 3, 4
    (``Inh-2``); ``Glial-1`` is restricted to layer 1 and ``Glial-2`` is scattered over all
    layers.

    Choices the paper leaves open, taken from the authors' public generator
    (ma-compbio/SpiceMix, ``data/synthetic_cortex``) unless said otherwise:

    - tissue: each field of view is the unit square; layers are cut along x at 0.35, 0.5 and
      0.75; positions are uniform with a minimum pairwise distance of
      ``0.75 / sqrt(n_cells)`` by default;
    - types: 7% of all cells are ``Glial-2``; the others take their layer's mixture: layer 1
      10% ``Inh-1``, 50% ``Glial-1``, 40% ``eL1``; layer 2 only ``eL2``; layer 3 10% ``Inh-1``,
      30% ``Inh-2``, 60% ``eL3``; layer 4 10% ``Inh-1``, 10% ``Inh-2``, 80% ``eL4``;
    - ``b_c`` (see :func:`cortex_proportion_means`): 1.0 on the major-type metagene, 0.6 on
      the subtype or layer metagene of excitatory and inhibitory types, 0.3 on the metagene of
      the current layer for inhibitory and glial types, and 0.05 on each noise metagene;
    - ``Sigma_c`` is diagonal with standard deviation 0.3 (noise metagenes 0.09) on the
      metagenes where ``b_c > 0`` and zero elsewhere, so a type only uses its own metagenes;
      ``eta`` is truncated so that ``b_c + eta >= 0``. ``sigma_x = 1`` reproduces the
      reference generator's setting (its ``sigX_scale = 3`` times standard deviations of 0.1
      and 0.03), and ``sigma_y = 0.02`` its noise (``sigY_scale / n_genes`` with 2 / 100);
    - the glial major-type metagenes are not linked (the reference links them, the paper does
      not say so); the layer metagenes share one linked gene set (the reference links each of
      ``L2``-``L4`` to ``L1`` independently);
    - :data:`SCENARIOS` lists the four ``(sigma_y, sigma_x)`` pairs used for Fig. 2d-style
      evaluations here: the reference setting and doubled noise and/or doubled state variance;
    - all fields of view share ``M``; positions, types and states are drawn per field of view;
    - expression values below zero (about 0.1% at the default noise) are set to zero when
      ``clip_negative`` is true, so that non-negative factorisations accept the data; the
      unclipped values are kept in ``.layers['unclipped']``.

    Parameters
    ----------
    n_fovs
        Number of fields of view (tissue samples).
    n_cells
        Cells per field of view.
    n_genes
        Number of genes ``G`` (at least the 13 metagenes).
    sigma_y
        Standard deviation of the expression noise.
    sigma_x
        Scale of the covariance of ``eta`` (cell-to-cell variation of the proportions).
    min_distance
        Minimum distance between two cells in a field of view (unit square); default
        ``0.75 / sqrt(n_cells)``. At most half of the area can be covered by disks of this
        diameter.
    clip_negative
        Set negative expression values to zero in ``.X``.
    random_state
        Seed or generator; the same seed gives identical output.

    Returns
    -------
    Simulated cells x genes; the slots are listed under Notes.

    Notes
    -----
    The returned AnnData has ``n_fovs * n_cells`` cells and ``n_genes`` genes:

    - ``.X``: expression (float32);
    - ``.obs['cell_type']``, ``.obs['layer']``, ``.obs['fov']``: categoricals;
    - ``.obsm['spatial']``: positions in the unit square of each field of view;
    - ``.obsm['X_true']`` (a DataFrame with the metagene names as columns) and
      ``.varm['metagenes_true']``: the true hidden states ``X`` and metagenes ``M`` (also in
      ``.uns['simulate_cortex']`` as arrays ``X`` and ``M``);
    - ``.uns['simulate_cortex']``: ``metagene_names``, ``proportion_means`` (``b_c``),
      ``linked_genes`` (boolean mask per linked group) and ``params``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=2, n_cells=200, random_state=0)
    >>> adata.shape
    (400, 100)
    >>> adata.obs["cell_type"].cat.categories.tolist()
    ['eL1', 'eL2', 'eL3', 'eL4', 'Inh-1', 'Inh-2', 'Glial-1', 'Glial-2']
    """
    _check_params(n_fovs, n_cells, n_genes, sigma_y, sigma_x)
    width = height = 1.0
    if min_distance is None:
        min_distance = 0.75 / np.sqrt(n_cells / (width * height))
    if not np.isfinite(min_distance) or min_distance < 0:
        raise ValueError(f"`min_distance` must be a finite number >= 0, got {min_distance!r}.")
    coverage = n_cells * np.pi * (min_distance / 2) ** 2 / (width * height)
    if coverage > _MAX_COVERAGE:
        d_max = np.sqrt(_MAX_COVERAGE * width * height / (n_cells * np.pi)) * 2
        raise ValueError(
            f"`min_distance={min_distance:g}` cannot fit {n_cells} cells in the unit square; "
            f"use `min_distance <= {d_max:.4g}` or fewer cells."
        )
    rng = np.random.default_rng(random_state)

    m, linked = _metagenes(n_genes, rng)
    coords, layers, types, fovs, states = [], [], [], [], []
    for fov in range(n_fovs):
        xy = _place_cells(n_cells, width, height, min_distance, rng)
        layer, cell_types = _assign_types(xy[:, 0], width, rng)
        states.append(_hidden_states(cell_types, layer, sigma_x, rng))
        coords.append(xy)
        layers.append(layer)
        types.append(cell_types)
        fovs.append(np.full(n_cells, fov))
    x = np.concatenate(states)
    y = x @ m.T + rng.normal(0.0, sigma_y, size=(len(x), n_genes))

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.concatenate(types), categories=list(CELL_TYPES)),
            "layer": pd.Categorical.from_codes(np.concatenate(layers), categories=list(LAYERS)),
            "fov": pd.Categorical(np.concatenate(fovs).astype(str), categories=[str(i) for i in range(n_fovs)]),
        },
        index=[f"fov{f}_cell{i}" for f in range(n_fovs) for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)])
    adata = AnnData(
        X=(np.clip(y, 0, None) if clip_negative else y).astype(np.float32),
        obs=obs,
        var=var,
        obsm={"spatial": np.concatenate(coords), "X_true": pd.DataFrame(x, index=obs.index, columns=list(METAGENES))},
        varm={"metagenes_true": m},
        layers={"unclipped": y.astype(np.float32)} if clip_negative else {},
    )
    adata.uns["simulate_cortex"] = {
        "M": m,
        "X": x,
        "metagene_names": np.array(METAGENES),
        "proportion_means": cortex_proportion_means(),
        "linked_genes": linked,
        "params": {
            "n_fovs": n_fovs,
            "n_cells": n_cells,
            "n_genes": n_genes,
            "sigma_y": float(sigma_y),
            "sigma_x": float(sigma_x),
            "min_distance": float(min_distance),
            "clip_negative": clip_negative,
            "random_state": random_state if isinstance(random_state, int) else repr(random_state),
        },
    }
    return adata
