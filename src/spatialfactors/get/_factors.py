"""Factors of a factorisation: their names, their weights per obs and their loadings per gene."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from spatialfactors._validation import _assert_str, _extract_adata, _get_patterns, _is_int

from ._registry import _kind_of

#: Where a factorisation keeps its gene loadings, in order of preference (staNMF, SpiceMix).
_LOADINGS = ("loadings", "metagenes")

#: Name prefix of one factor per kind of factorisation: staNMF's principal patterns, SpiceMix's metagenes.
_PREFIX = {"stanmf": "PP", "spicemix": "MG"}

#: What a factor is called in messages, by its name prefix.
_NOUN = {"PP": "patterns", "MG": "metagenes"}


def _names(prefix: str, k: int) -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(k)]


def factor_names(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> list[str]:
    """Return the name of every factor of the factorisation stored under ``key``.

    One name per factor, used by every table, network and plot: staNMF's principal patterns are
    ``PP1 ... PPK`` (the name of :cite:`cahill2024stanmf`), SpiceMix's metagenes ``MG1 ... MGK``.
    The tools record the names in ``.uns[key]['factor_names']``; for older records they are derived
    from the kind of run and K.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf` or :func:`spatialfactors.tl.spicemix`
        (or a SpatialData with ``table_key``).
    key
        ``key_added`` of the factorisation.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    The K factor names, in the order of the columns of ``.obsm['X_{key}']``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> sf.get.factor_names(adata)
    ['PP1', 'PP2']
    >>> adata.uns["spicemix"] = {"k": 3, "loadings_key": "spicemix_metagenes"}
    >>> adata.obsm["X_spicemix"] = np.ones((4, 3))
    >>> sf.get.factor_names(adata, "spicemix")
    ['MG1', 'MG2', 'MG3']
    """
    adata = _extract_adata(adata, table_key)
    _assert_str("key", key)
    record = adata.uns.get(key)
    if isinstance(record, dict) and "factor_names" in record:
        return [str(n) for n in np.asarray(record["factor_names"]).ravel()]
    k = _get_patterns(adata, key).shape[1]
    return _names(_prefix(adata, key), k)


def _prefix(adata: AnnData, key: str) -> str:
    """Name prefix of the factors under ``key``: from the recorded kind, else from the kind of loadings."""
    kind = _kind_of(adata, key)
    if kind in _PREFIX:
        return _PREFIX[kind]
    if f"{key}_metagenes" in adata.varm and f"{key}_loadings" not in adata.varm:
        return "MG"
    return "PP"


def _default_names(kind: str, k: int) -> list[str]:
    """Factor names a tool of ``kind`` records for a run with ``k`` factors."""
    return _names(_PREFIX[kind], k)


def _noun(names: Sequence[str]) -> str:
    prefix = str(names[0])[:2] if len(names) else ""
    return _NOUN.get(prefix, "factors") if all(str(n).startswith(prefix) for n in names) else "factors"


def _select_factors(selection, names: Sequence[str], what: str = "factors") -> list[int]:
    """0-based indices of the selected factors: None (all), a 0-based index, a name, or a sequence of those.

    ``what`` is the parameter's name in the messages; names are those of :func:`~spatialfactors.get.factor_names`.
    """
    names = [str(n) for n in names]
    n = len(names)
    if selection is None:
        return list(range(n))
    if isinstance(selection, str) or np.ndim(selection) == 0:
        return [_factor_index(selection, names, what)]
    chosen = [_factor_index(s, names, what) for s in selection]
    if not chosen:
        raise ValueError(f"`{what}` is empty; pass None for all {_noun(names)}.")
    return chosen


def _factor_index(factor, names: list[str], what: str) -> int:
    """0-based index of one factor given as an index or as its name."""
    n, noun = len(names), _noun(names)
    example = names[0] if names else "PP1"
    if isinstance(factor, str):
        if factor not in names:
            shown = f"{names[0]} ... {names[-1]}" if n else "none"
            raise ValueError(f"`{what}` {factor!r} is not one of the {n} {noun} ({shown}).")
        return names.index(factor)
    if not _is_int(factor):
        raise TypeError(
            f"`{what}` must be a {noun[:-1]} index (0-based) or a name such as {example!r}, got {factor!r}."
        )
    if not 0 <= factor < n:
        raise ValueError(f"`{what}` {factor} is out of range for {n} {noun} (0-based indices 0 ... {n - 1}).")
    return int(factor)


def _factorisation(adata: AnnData, key: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Return the patterns ``.obsm['X_{key}']`` (obs x K), the loadings (genes x K) and their ``.varm`` key, checked."""
    _assert_str("key", key)
    basis = f"X_{key}"
    found = [f"{key}_{suffix}" for suffix in _LOADINGS if f"{key}_{suffix}" in adata.varm]
    missing = ([f"`adata.obsm[{basis!r}]`"] if basis not in adata.obsm else []) + (
        [f"`adata.varm[{key + '_loadings'!r}]` (or `{key + '_metagenes'!r}`)"] if not found else []
    )
    if missing:
        raise KeyError(
            f"{key!r} is not a factorisation result: {' and '.join(missing)} not found. Run "
            f"`sf.tl.stanmf(adata, key_added={key!r})` or `sf.tl.spicemix(adata, key_added={key!r})` first, "
            f"or pass the `key` of one. Available: obsm {sorted(adata.obsm)}, varm {sorted(adata.varm)}."
        )
    loadings_key = _loadings_key(adata, key, found)
    loadings = adata.varm[loadings_key]
    loadings = np.asarray(loadings.toarray() if hasattr(loadings, "toarray") else loadings)
    if loadings.dtype.kind not in "iuf":
        raise TypeError(f"`adata.varm[{loadings_key!r}]` must hold real numbers, got dtype {loadings.dtype}.")
    loadings = loadings.astype(np.float64)
    if loadings.ndim != 2 or loadings.shape[0] != adata.n_vars:
        raise ValueError(f"`adata.varm[{loadings_key!r}]` must be (n_vars, K), got shape {loadings.shape}.")
    if not np.isfinite(loadings).all() or (loadings < 0).any():
        raise ValueError(
            f"`adata.varm[{loadings_key!r}]` must be finite and non-negative: importance scores "
            "a_kj / sum_k a_kj need the loadings of a non-negative factorisation."
        )
    dictionary = _get_patterns(adata, key)
    if dictionary.shape[1] != loadings.shape[1]:
        raise ValueError(
            f"`adata.obsm[{basis!r}]` has {dictionary.shape[1]} patterns but `adata.varm[{loadings_key!r}]` "
            f"has {loadings.shape[1]}; they must come from the same factorisation."
        )
    entry = adata.uns.get(key)
    k = entry.get("k") if isinstance(entry, dict) else None
    if k is not None and _is_int(k) and int(k) != dictionary.shape[1]:
        raise ValueError(
            f"`adata.uns[{key!r}]` records a run with K = {int(k)} but `adata.obsm[{basis!r}]` has "
            f"{dictionary.shape[1]} patterns: they come from different runs. Rerun the factorisation "
            f"(`sf.tl.stanmf(adata, key_added={key!r})` or `sf.tl.spicemix`)."
        )
    return dictionary, loadings, loadings_key


def _loadings_key(adata: AnnData, key: str, found: list[str]) -> str:
    """Return the ``.varm`` key of the loadings of the run that wrote ``.obsm['X_{key}']``.

    A factorisation records it in ``.uns[key]['loadings_key']``; without a record (patterns and
    loadings put there by hand), the only loadings under ``key``. Two candidates without a record
    are ambiguous: one of them is stale.
    """
    entry = adata.uns.get(key)
    recorded = entry.get("loadings_key") if isinstance(entry, dict) else None
    if recorded is not None:
        if not isinstance(recorded, str) or recorded not in adata.varm:
            raise KeyError(
                f"`adata.uns[{key!r}]['loadings_key']` names `adata.varm[{recorded!r}]`, which is missing: the "
                f"loadings of this run were removed. Rerun the factorisation (`sf.tl.stanmf(adata, key_added={key!r})` "
                "or `sf.tl.spicemix`)."
            )
        return recorded
    if len(found) > 1:
        raise ValueError(
            f"Both `adata.varm[{found[0]!r}]` and `adata.varm[{found[1]!r}]` exist and nothing records which one "
            f"belongs to `adata.obsm['X_{key}']`, so one is stale; delete it (e.g. `del adata.varm[{found[1]!r}]`) "
            "or rerun the factorisation."
        )
    return found[0]


def factors(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> pd.DataFrame:
    """Return the weights of every factor per obs, with one named column per factor.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf` or :func:`spatialfactors.tl.spicemix`
        (or a SpatialData with ``table_key``).
    key
        ``key_added`` of the factorisation.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    ``.obsm['X_{key}']`` as a DataFrame: obs names as index, :func:`~spatialfactors.get.factor_names` as columns.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((3, 2)), obsm={"X_stanmf": np.arange(6.0).reshape(3, 2)})
    >>> sf.get.factors(adata)
       PP1  PP2
    0  0.0  1.0
    1  2.0  3.0
    2  4.0  5.0
    """
    adata = _extract_adata(adata, table_key)
    values = _get_patterns(adata, key)
    return pd.DataFrame(values, index=adata.obs_names.copy(), columns=factor_names(adata, key))


def loadings(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> pd.DataFrame:
    """Return the loadings of every factor per gene, with one named column per factor.

    The loadings are those the run recorded (``.uns[key]['loadings_key']``): staNMF's coefficients
    ``.varm['{key}_loadings']`` or SpiceMix's metagenes ``.varm['{key}_metagenes']``.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf` or :func:`spatialfactors.tl.spicemix`
        (or a SpatialData with ``table_key``).
    key
        ``key_added`` of the factorisation.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    Genes x K DataFrame: var names as index, :func:`~spatialfactors.get.factor_names` as columns.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.get.loadings(adata)
       PP1  PP2
    0  3.0  1.0
    1  0.0  2.0
    2  4.0  0.0
    """
    adata = _extract_adata(adata, table_key)
    _, values, _ = _factorisation(adata, key)
    return pd.DataFrame(values, index=adata.var_names.copy(), columns=factor_names(adata, key))
