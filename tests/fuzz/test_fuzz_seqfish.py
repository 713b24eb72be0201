"""Fuzz targets of ``sf.datasets.seqfish_plus_cortex``: Giotto's FOV-0 subset and CaiGroup's full layout."""

import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _fuzzing import check_reader, corpus, fuzz_settings, mutate_bytes, mutate_text
from anndata import AnnData
from hypothesis import given
from hypothesis import strategies as st

import spatialfactors as sf

FOV0 = corpus("seqfish_fov0")[0].parent
FULL = corpus("seqfish_full")[0].parent
FOV0_FILES = {  # file: field separator
    "seqfish_field_expr.txt.gz": " ",
    "seqfish_field_locs.txt": " ",
    "cortex_svz_centroids_rotated.csv": ",",
    "cortex_svz_cell_type_annotations.csv": ",",
    "cortex_svz_centroids_annot.txt": "\t",
}
FULL_FILES = {
    "sourcedata/cortex_svz_counts.csv": ",",
    "sourcedata/cortex_svz_cellcentroids.csv": ",",
    "cortex_svz_cell_type_annotations.csv": ",",
    "cortex_svz_centroids_annot.txt": "\t",
}


def _valid(adata):
    assert isinstance(adata, AnnData)
    n, g = adata.shape
    assert adata.obsm["spatial"].shape == (n, 2) and np.isfinite(adata.obsm["spatial"]).all()
    assert adata.var_names.is_unique and adata.obs_names.is_unique and len(adata.var_names) == g
    x = adata.X.toarray()
    assert x.dtype == np.float32 and (x >= 0).all() and np.isfinite(x).all()
    assert adata.obs["fov"].notna().all() and adata.obs["louvain"].notna().all()


def _damage(data, folder: Path, files: dict[str, str]) -> list[str]:
    names = data.draw(st.lists(st.sampled_from(list(files)), min_size=1, max_size=2, unique=True), label="files")
    for name in names:
        path = folder / name
        raw = path.read_bytes()
        if name.endswith(".gz"):
            if data.draw(st.booleans(), label="damage the gzip stream"):
                path.write_bytes(mutate_bytes(data.draw, raw))
                continue
            raw = gzip.decompress(raw)
            path.write_bytes(gzip.compress(mutate_text(data.draw, raw.decode(), sep=files[name]), mtime=0))
        else:
            path.write_bytes(mutate_text(data.draw, raw.decode(), sep=files[name]))
    return [Path(n).name for n in files]


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_seqfish_fov0(data):
    """Expression (gzip text), locations, rotated centroids, louvain labels, cell types: one or two damaged."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seqfish"
        shutil.copytree(FOV0, folder)
        names = _damage(data, folder, FOV0_FILES)
        check_reader(lambda: sf.datasets.seqfish_plus_cortex(folder, subset="fov0"), names, _valid)


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_seqfish_full(data):
    """CaiGroup's counts (header of genes) and centroids, labels and cell types: one or two damaged."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seqfish"
        shutil.copytree(FULL, folder)
        names = _damage(data, folder, FULL_FILES)
        check_reader(lambda: sf.datasets.seqfish_plus_cortex(folder, subset="full"), names, _valid)


def test_corpus_seeds_are_valid():
    fov0 = sf.datasets.seqfish_plus_cortex(FOV0)
    assert fov0.shape == (3, 3) and fov0.obs_names.tolist() == ["cell_1", "cell_2", "cell_3"]
    assert fov0.obs["cell_type"].tolist() == ["Excitatory neuron", "Astrocyte", "Excitatory neuron"]
    full = sf.datasets.seqfish_plus_cortex(FULL)
    assert full.shape == (5, 3) and full.obs["fov"].tolist() == ["0", "0", "0", "1", "5"]
    assert full.obs["region"].tolist() == ["cortex"] * 4 + ["SVZ"]
