"""Fuzz targets of the STARmap loaders: the visual cortex text files, the .rds gene reader, the 3D files."""

import bz2
import gzip
import io
import lzma
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp
from _fuzzing import check_reader, corpus, fuzz_settings, mutate_bytes, mutate_text
from anndata import AnnData
from hypothesis import given
from hypothesis import strategies as st

import spatialfactors as sf
from spatialfactors.datasets import _starmap

VISUAL = corpus("starmap_visual")[0].parent
VISUAL_FILES = {  # file: field separator
    "cell_barcode_count.csv": ",",
    "genes_from_rds.csv": None,
    "class_labels.csv": ",",
    "Centriods_extracted.csv": " ",
}
RDS_SEEDS = corpus("rds")
VOLUME = corpus("starmap_3d")[0].parent


def _copy(folder: Path, tmp: str) -> Path:
    target = Path(tmp) / folder.name
    shutil.copytree(folder, target)
    return target


def _valid_cells(adata, n_spatial):
    assert isinstance(adata, AnnData)
    n, g = adata.shape
    assert adata.obsm["spatial"].shape == (n, n_spatial) and len(adata.var_names) == g
    assert adata.var_names.is_unique and adata.obs_names.is_unique
    x = adata.X.toarray() if sp.issparse(adata.X) else adata.X
    assert x.dtype == np.float32 and np.isfinite(x).all()


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_starmap_visual_files(data):
    """One or two of the four text files damaged: counts, gene list, labels, centroids."""
    names = data.draw(st.lists(st.sampled_from(list(VISUAL_FILES)), min_size=1, max_size=2, unique=True))
    filter_cells = data.draw(st.booleans(), label="filter_cells")
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(VISUAL, tmp)
        for name in names:
            path = folder / name
            path.write_bytes(mutate_text(data.draw, path.read_text(), sep=VISUAL_FILES[name]))

        def validate(adata):
            _valid_cells(adata, 2)
            assert (adata.X.toarray() >= 0).all()

        check_reader(
            lambda: sf.datasets.starmap_visual_cortex(folder, filter_cells=filter_cells), VISUAL_FILES, validate
        )


_CODECS = {
    b"\x1f\x8b": lambda b: gzip.compress(b, mtime=0),
    b"BZh": bz2.compress,
    b"\xfd7zXZ\x00": lzma.compress,
}


def _inner(raw: bytes) -> tuple[bytes, object]:
    for magic, codec in _CODECS.items():
        if raw.startswith(magic):
            return {b"\x1f\x8b": gzip.decompress, b"BZh": bz2.decompress}.get(magic, lzma.decompress)(raw), codec
    return raw, lambda b: b


@fuzz_settings(250)
@given(data=st.data())
def test_fuzz_rds_gene_vector(data):
    """R objects: truncated or corrupt compressed streams, damaged XDR inside an intact stream."""
    seed = data.draw(st.sampled_from(RDS_SEEDS), label="seed")
    raw = seed.read_bytes()
    if data.draw(st.booleans(), label="damage the serialisation inside the compression"):
        inner, codec = _inner(raw)
        raw = codec(mutate_bytes(data.draw, inner))
    else:
        raw = mutate_bytes(data.draw, raw)
    n_genes = data.draw(st.sampled_from([4, 4, 3, 1]), label="n_genes")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / seed.name
        path.write_bytes(raw)

        def validate(listing):
            assert isinstance(listing, bytes)
            assert len(listing.decode().splitlines()) == n_genes

        check_reader(lambda: _starmap._genes_from_rds(path, n_genes), [path.name], validate)


def _mat_variables(draw) -> dict:
    """`expr` and `goodLocs` of odd shapes and types, or missing."""
    n = draw(st.integers(0, 4))
    g = draw(st.sampled_from([3, 3, 2, 0]))
    kinds = ["int", "float", "complex", "text", "cell", "sparse", "struct", "vector", "empty", "missing", "nan"]

    def make(kind, shape):
        if kind == "int":
            return np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
        if kind == "float":
            return np.linspace(-1, 1, int(np.prod(shape))).reshape(shape)
        if kind == "complex":
            return np.ones(shape, dtype=complex)
        if kind == "nan":
            return np.full(shape, np.nan)
        if kind == "text":
            return "abc"
        if kind == "cell":
            cell = np.empty((1, 2), dtype=object)
            cell[0, 0], cell[0, 1] = np.ones(2), "x"
            return cell
        if kind == "sparse":
            return sp.csc_matrix(np.ones(shape))
        if kind == "struct":
            return {"a": np.ones(2)}
        if kind == "vector":
            return np.ones(shape[0])
        return np.zeros((0, 0))

    out = {}
    for var, shape in (
        ("expr", (n, g)),
        ("goodLocs", (draw(st.sampled_from([n, n, n + 1])), draw(st.sampled_from([3, 3, 2])))),
    ):
        kind = draw(st.sampled_from(kinds[:2] * 3 + kinds[2:]), label=var)
        if kind != "missing":
            out[var] = make(kind, shape)
    return out


@fuzz_settings(150)
@given(data=st.data())
def test_fuzz_starmap_3d_files(data):
    """The MATLAB file (byte damage or odd variables) and the gene name list."""
    what = data.draw(st.sampled_from(["mat bytes", "mat variables", "gene names", "both"]), label="damage")
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(VOLUME, tmp)
        mat, names = folder / "20180123_BS10_light.mat", folder / "gene_names.csv"
        if what in ("mat bytes", "both"):
            mat.write_bytes(mutate_bytes(data.draw, mat.read_bytes()))
        if what == "mat variables":
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, _mat_variables(data.draw), do_compression=data.draw(st.booleans()))
            mat.write_bytes(buffer.getvalue())
        if what in ("gene names", "both"):
            names.write_bytes(mutate_text(data.draw, names.read_text(), sep=","))
        check_reader(
            lambda: sf.datasets.starmap_3d_cortex(folder), [mat.name, names.name], lambda a: _valid_cells(a, 3)
        )


def test_corpus_seeds_are_valid():
    adata = sf.datasets.starmap_visual_cortex(VISUAL, filter_cells=False)
    assert adata.shape == (5, 4) and adata.var_names.tolist() == ["Slc17a7", "Mgp", "Gad1", "Calb2"]
    assert adata.obs["passes_filter"].tolist() == [True, True, True, False, True]
    for seed in RDS_SEEDS:
        assert _starmap._genes_from_rds(seed, 4) == b"Slc17a7\nMgp \nGad1\nCalb2\n"
    volume = sf.datasets.starmap_3d_cortex(VOLUME)
    assert volume.shape == (4, 3) and volume.var_names.tolist() == ["Slc17a7", "Mgp", "Calb2"]
