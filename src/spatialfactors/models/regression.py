"""Gene-wise simple linear regression on one covariate, with multiple-testing correction.

Every gene ``g`` is fitted as ``y_g = intercept + slope * x`` by ordinary least squares, and
the slope is tested against zero with the t statistic ``r sqrt((n - 2) / (1 - r^2))`` on
``n - 2`` degrees of freedom (two-sided), the test of ``scipy.stats.linregress``, for all
genes at once. p-values are corrected with statsmodels'
``statsmodels.stats.multitest.multipletests``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: Corrections of ``statsmodels.stats.multitest.multipletests`` offered.
FDR_METHODS = ("fdr_tsbh", "fdr_tsbky", "fdr_bh", "fdr_by", "bonferroni", "holm")


def linear_fits(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Slope, intercept, Pearson r and two-sided p-value of ``y[:, g] ~ x`` for every column ``g``.

    Columns without variance get NaN.

    Parameters
    ----------
    x
        (n,) covariate (not constant).
    y
        (n, G) responses.

    Returns
    -------
    ``slope``, ``intercept``, ``r``, ``p``: arrays of length G.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.regression import linear_fits
    >>> fit = linear_fits(np.arange(4.0), np.c_[2 * np.arange(4.0) + 1, [1.0, 0.0, 1.0, 0.0]])
    >>> fit["slope"].round(2).tolist(), fit["r"].round(2).tolist()
    ([2.0, -0.2], [1.0, -0.45])
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    xc = x - x.mean()
    yc = y - y.mean(0)
    sxx = xc @ xc
    sxy = xc @ yc
    syy = (yc**2).sum(0)
    slope = sxy / sxx
    intercept = y.mean(0) - slope * x.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
        t = r * np.sqrt((n - 2) / np.maximum(1.0 - r**2, 1e-300))
    p = 2.0 * stats.t.sf(np.abs(t), n - 2)
    bad = syy <= 0
    r[bad] = np.nan
    p[bad] = np.nan
    return {"slope": slope, "intercept": intercept, "r": r, "p": p}


def regress_genes(
    x: np.ndarray,
    y: np.ndarray,
    genes: np.ndarray,
    *,
    min_fraction: float = 0.3,
    method: str = "fdr_tsbh",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Regress every gene expressed in at least ``min_fraction`` of the cells on ``x``; correct the p-values.

    Genes constant in these cells are left out (their slope cannot be tested).

    Parameters
    ----------
    x
        (n,) covariate.
    y
        (n, G) non-negative expression.
    genes
        (G,) gene names.
    min_fraction
        Smallest fraction of cells with expression > 0 for a gene to be tested.
    method
        Correction of ``statsmodels.stats.multitest.multipletests`` (``"fdr_tsbh"``: two-step
        Benjamini-Krieger-Yekutieli).
    alpha
        FDR level (``significant``: ``q < alpha``; the two-step methods use it in their first step).

    Returns
    -------
    One row per tested gene, sorted by ``q`` then ``p``: ``gene``, ``slope``, ``intercept``,
    ``r``, ``p``, ``q``, ``significant``, ``fraction``.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.regression import regress_genes
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random(50)
    >>> y = np.c_[1 + 2 * x + 0.1 * rng.random(50), rng.random(50)]
    >>> regress_genes(x, y, np.array(["up", "noise"]))["gene"].tolist()[0]
    'up'
    """
    from statsmodels.stats.multitest import multipletests

    fraction = (np.asarray(y) > 0).mean(0)
    tested = np.flatnonzero(fraction >= min_fraction)
    fit = linear_fits(x, np.asarray(y)[:, tested])
    ok = np.isfinite(fit["p"])
    tested = tested[ok]
    table = pd.DataFrame(
        {
            "gene": np.asarray(genes)[tested].astype(str),
            "slope": fit["slope"][ok],
            "intercept": fit["intercept"][ok],
            "r": fit["r"][ok],
            "p": fit["p"][ok],
        }
    )
    table["q"] = multipletests(table["p"].to_numpy(), alpha=alpha, method=method)[1] if len(table) else []
    table["significant"] = table["q"] < alpha
    table["fraction"] = fraction[tested]
    return table.sort_values(["q", "p"], kind="stable").reset_index(drop=True)
