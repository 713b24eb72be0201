"""Fuzz targets of ``sf.datasets.visium_dlpfc``: DR.SC's Seurat object (.rda), damaged bytes and odd R objects."""

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _fuzzing import check_reader, corpus, fuzz_settings, mutate_bytes, same_outcome
from anndata import AnnData
from hypothesis import given
from hypothesis import strategies as st
from make_corpus import _S4, DLPFC_SPOTS, dlpfc_seurat, write_rda

import spatialfactors as sf

SEED = corpus("dlpfc_visium")[0]


def _valid(adata):
    assert isinstance(adata, AnnData)
    n, g = adata.shape
    assert adata.obsm["spatial"].shape == (n, 2) and np.isfinite(adata.obsm["spatial"]).all()
    assert adata.obs_names.is_unique and adata.var_names.is_unique and len(adata.var_names) == g
    x = adata.X
    assert x.format == "csr" and x.dtype == np.float32 and x.has_canonical_format
    assert (x.data >= 0).all() and np.isfinite(x.data).all() and (x.data == np.round(x.data)).all()
    assert isinstance(adata.obs["layer"].dtype, pd.CategoricalDtype)
    assert adata.obs["row"].dtype == np.int64 and adata.obs["col"].dtype == np.int64


def _read(raw: bytes) -> bool:
    """Read the bytes twice: each read is valid or refused naming the file (check_reader); both agree."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SEED.name).write_bytes(raw)
        first, second = (check_reader(lambda: sf.datasets.visium_dlpfc(tmp), [SEED.name], _valid) for _ in range(2))
        return same_outcome(first, second)


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_dlpfc_bytes(data):
    """The .rda file: the gzip stream damaged, or the R serialisation inside an intact gzip stream."""
    raw = SEED.read_bytes()
    if data.draw(st.booleans(), label="damage the serialisation inside the compression"):
        raw = gzip.compress(mutate_bytes(data.draw, gzip.decompress(raw)), mtime=0)
    else:
        raw = mutate_bytes(data.draw, raw)
    assert _read(raw)


_N = len(DLPFC_SPOTS)
#: Replacements of one part of the Seurat object: (where, value). Values of the wrong type, shape or content.
_ODD = st.sampled_from(
    [
        None,
        [],
        np.array([], dtype=np.int32),
        np.array([1.5, -1.0, np.nan]),
        np.array(["a", "b"]),
        np.array([-1, 2**31 - 1], dtype=np.int32),
        np.arange(_N + 1, dtype=np.int32),
        {"x": np.ones(2)},
        _S4("dgCMatrix"),
        pd.DataFrame({"row": [1]}, index=["a"]),
    ]
)
_MATRIX_SLOTS = ["i", "p", "x", "Dim", "Dimnames"]
_META_EDITS = ["drop row", "drop col", "drop annotation", "NA row", "float col", "strings row", "reorder", "codes"]


def _odd_object(draw):
    seurat = dlpfc_seurat()
    matrix = seurat.slots["assays"]["RNA"].slots["counts"]
    meta = seurat.slots["meta.data"]
    where = draw(st.sampled_from(["matrix slot", "meta.data", "seurat slot", "counts", "objects"]), label="where")
    if where == "matrix slot":
        matrix.slots[draw(st.sampled_from(_MATRIX_SLOTS))] = draw(_ODD)
    elif where == "meta.data":
        edit = draw(st.sampled_from(_META_EDITS), label="edit")
        if edit.startswith("drop"):
            meta = meta.drop(columns=edit.split()[1])
        elif edit == "NA row":
            meta["row"] = pd.array([None, *meta["row"][1:]], dtype="Int32").astype("float64")
        elif edit == "float col":
            meta["col"] = meta["col"] + 0.5
        elif edit == "strings row":
            meta["row"] = meta["row"].astype(str).to_numpy(dtype=object)
        elif edit == "reorder":
            meta = meta.iloc[::-1]
        else:  # layer names of a factor without levels: plain strings, one of them empty
            meta["annotation"] = np.array(["Layer1", "", *["WM"] * (_N - 2)], dtype=object)
        seurat.slots["meta.data"] = meta
    elif where == "seurat slot":
        seurat.slots[draw(st.sampled_from(["assays", "meta.data"]))] = draw(_ODD)
    elif where == "counts":
        counts = np.ones((4, _N)) * draw(st.sampled_from([-1.0, 0.5, np.inf, 2.0**24, 0.0]))
        seurat = dlpfc_seurat(counts)
    else:
        n = draw(st.sampled_from([0, 2]))
        return {f"obj{k}": seurat for k in range(n)} if n else {"x": np.ones(3)}
    return {"dlpfc151510": seurat}


@fuzz_settings(100)
@given(data=st.data())
def test_fuzz_dlpfc_objects(data):
    """Well-formed R data holding odd objects: slots missing or of another type, meta.data columns, counts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SEED.name
        write_rda(path, _odd_object(data.draw))
        assert _read(path.read_bytes())


def test_corpus_seed_is_valid():
    adata = sf.datasets.visium_dlpfc(SEED.parent)
    assert adata.shape == (7, 4) and adata.var_names[0] == "ENSG00000187608"
    assert adata.obs["layer"].isna().tolist() == [False] * 4 + [True] + [False] * 2
    assert adata.obs["layer"].cat.categories.tolist() == ["Layer1", "Layer2", "WM"]
