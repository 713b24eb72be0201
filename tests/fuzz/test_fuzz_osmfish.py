"""Fuzz targets of ``sf.datasets.osmfish_cortex``: the loom (HDF5) file, damaged bytes and odd datasets."""

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from _fuzzing import check_reader, corpus, fuzz_settings, mutate_bytes, same_outcome
from anndata import AnnData
from hypothesis import given
from hypothesis import strategies as st
from make_corpus import osmfish_attrs, write_loom

import spatialfactors as sf

SEED = corpus("osmfish")[0]


def _valid(adata):
    assert isinstance(adata, AnnData)
    n, g = adata.shape
    assert adata.obsm["spatial"].shape == (n, 2) and np.isfinite(adata.obsm["spatial"]).all()
    assert adata.obs_names.is_unique and adata.var_names.is_unique and len(adata.var_names) == g
    x = adata.X
    assert x.format == "csr" and x.dtype == np.float32
    assert (x.data >= 0).all() and np.isfinite(x.data).all() and (x.data == np.round(x.data)).all()
    assert isinstance(adata.obs["region"].dtype, pd.CategoricalDtype)
    assert "Excluded" not in adata.obs["region"].cat.categories
    assert adata.obs["valid"].dtype == bool


def _read(path: Path) -> bool:
    """Read the file twice: each read is valid or refused naming the file (check_reader); both agree."""
    first, second = (
        check_reader(lambda: sf.datasets.osmfish_cortex(path.parent), [path.name], _valid) for _ in range(2)
    )
    return same_outcome(first, second)


@fuzz_settings(150)
@given(data=st.data())
def test_fuzz_osmfish_bytes(data):
    """The HDF5 file with a few damaged bytes (superblock, object headers, B-trees, compressed chunks) or truncated."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SEED.name
        path.write_bytes(mutate_bytes(data.draw, SEED.read_bytes()))
        assert _read(path)


def _odd(draw, values: np.ndarray):
    n = len(values)
    kind = draw(
        st.sampled_from(["missing", "short", "2-D", "float", "nan", "text", "vlen", "latin-1", "ints", "negative"]),
        label="odd",
    )
    if kind == "missing":
        return None
    if kind == "short":
        return values[: max(n - 1, 0)]
    if kind == "2-D":
        return np.stack([values, values])
    if kind == "float":
        return np.linspace(-0.5, 2.5, n)
    if kind == "nan":
        return np.full(n, np.nan)
    if kind == "text":
        return np.array(["x"] * n, dtype="S")
    if kind == "vlen":
        return np.array(["Layer 4", "é", *["Excluded"] * (n - 2)], dtype=object)
    if kind == "latin-1":
        return np.array([b"\xe9t\xe9"] * n, dtype="S")
    if kind == "ints":
        return np.arange(n) % 2
    return -np.ones(n, dtype=np.int64)


@fuzz_settings(100)
@given(data=st.data())
def test_fuzz_osmfish_datasets(data):
    """Well-formed HDF5 with odd loom datasets: missing, of other lengths, types, text encodings or values."""
    matrix, row_attrs, col_attrs = osmfish_attrs()
    names = ["matrix", "Gene", *col_attrs]
    for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True), label="datasets"):
        if name == "matrix":
            matrix = data.draw(st.sampled_from([matrix.T, matrix * -1, matrix + 0.5, matrix[:, :0], matrix.ravel()]))
            continue
        attrs = row_attrs if name == "Gene" else col_attrs
        value = _odd(data.draw, attrs[name])
        if value is None:
            del attrs[name]
        else:
            attrs[name] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SEED.name
        for attrs in (row_attrs, col_attrs):
            for k, v in attrs.items():
                if v.dtype == object:  # variable-length UTF-8 strings, as loompy writes them
                    attrs[k] = np.array(v.tolist(), dtype=h5py.string_dtype())
        chunks = data.draw(st.sampled_from([None, True])) if matrix.size else None
        write_loom(path, matrix, row_attrs, col_attrs, chunks=chunks)
        assert _read(path)


def test_corpus_seed_is_valid():
    adata = sf.datasets.osmfish_cortex(SEED.parent)
    assert adata.shape == (4, 4) and adata.var_names.tolist() == ["Gad2", "Slc32a1", "Crhbp", "Cnr1"]
    assert adata.obs_names.tolist() == ["cell_778", "cell_1409", "cell_3642", "cell_7925"]
    assert adata.obs["region"].cat.categories.tolist() == ["Layer 4", "Layer 6", "Internal Capsule Caudoputamen"]
    everything = sf.datasets.osmfish_cortex(SEED.parent, filter_excluded=False)
    assert everything.shape == (6, 4) and everything.obs["region"].cat.categories[-1] == "Excluded"
