import functools
import json
import re
import shutil
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import spatialfactors as sf

ABA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
EXPERIMENTS = {"Nrp1": 74272479, "Pdyn": 71717084}
ANNOTATION = "P56_Mouse_gridAnnotation.zip"


class _AllenStub(SimpleHTTPRequestHandler):
    """Files of a folder plus a fake RMA query answer; records every request path."""

    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.startswith("/api/v2/data/query.json"):
            criteria = urllib.parse.unquote(urllib.parse.urlsplit(self.path).query)
            gene = re.search(r"genes\[acronym\$eq'([^']+)'\]", criteria)[1]
            plane = re.search(r"plane_of_section\[name\$eq'([^']+)'\]", criteria)[1]
            rows = [{"id": EXPERIMENTS[gene], "failed": False}] if gene in EXPERIMENTS and plane == "coronal" else []
            body = json.dumps({"success": True, "num_rows": len(rows), "msg": rows}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def allen(tmp_path, monkeypatch):
    """A local stand-in for the Allen servers, serving the real files from the shared data."""
    if not (ABA / "grids").is_dir():
        pytest.skip("shared Allen grids not available")
    monkeypatch.delenv("SPATIALFACTORS_DATA", raising=False)
    site = tmp_path / "site"
    (site / "grid_data" / "download").mkdir(parents=True)
    for gene, experiment in EXPERIMENTS.items():
        shutil.copy(
            ABA / "grids" / f"{gene}_P56_coronal_{experiment}_200um.zip",
            site / "grid_data" / "download" / str(experiment),
        )
    (site / "annotation").mkdir()
    shutil.copy(ABA / "grids" / ANNOTATION, site / "annotation" / ANNOTATION)
    (site / "api" / "v2" / "data").mkdir(parents=True)
    shutil.copy(
        ABA / "ontology" / "allen_structure_labels_grid_release.csv", site / "api" / "v2" / "data" / "query.csv"
    )
    handler = type("Handler", (_AllenStub,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    stub = {
        "site": site,
        "requests": handler.requests,
        "kwargs": {"api_url": url, "annotation_url": f"{url}/annotation/{ANNOTATION}", "cache_dir": tmp_path / "cache"},
    }
    yield stub
    server.shutdown()
    server.server_close()


def _direct():
    grids = ABA / "grids"
    files = [grids / f"{g}_P56_coronal_{e}_200um.zip" for g, e in EXPERIMENTS.items()]
    return sf.io.read_aba(files, grids / ANNOTATION)


def test_download_then_cache(allen):
    adata = sf.datasets.aba_grids(["Nrp1", "Pdyn"], **allen["kwargs"])
    assert adata.shape == (62529, 2)
    assert adata.var_names.tolist() == ["Nrp1", "Pdyn"]
    assert adata.var["section_data_set_id"].tolist() == [74272479, 71717084]
    assert (adata.var["plane"] == "coronal").all()
    direct = _direct()
    np.testing.assert_array_equal(adata.X, direct.X)
    np.testing.assert_array_equal(adata.obs["region_id"], direct.obs["region_id"])
    np.testing.assert_array_equal(adata.obsm["spatial"], direct.obsm["spatial"])
    paths = sorted(urllib.parse.urlsplit(p).path for p in allen["requests"])
    assert paths == sorted(
        ["/api/v2/data/query.json"] * 2
        + ["/grid_data/download/74272479", "/grid_data/download/71717084", f"/annotation/{ANNOTATION}"]
    )
    cached = sorted(p.name for p in (allen["kwargs"]["cache_dir"] / "aba_200um" / "grids").iterdir())
    assert cached == sorted([ANNOTATION, "Nrp1_P56_coronal_74272479_200um.zip", "Pdyn_P56_coronal_71717084_200um.zip"])
    # Second call: everything from the cache, no request at all.
    n = len(allen["requests"])
    again = sf.datasets.aba_grids(["Pdyn", "Nrp1"], **allen["kwargs"])
    assert len(allen["requests"]) == n
    np.testing.assert_array_equal(again.X, adata.X[:, ::-1])


def test_manifest_lookup_needs_no_query(allen):
    adata = sf.datasets.aba_grids("Nrp1", manifest=ABA / "experiments_manifest.csv", **allen["kwargs"])
    assert adata.shape == (62529, 1)
    assert not any(p.startswith("/api/") for p in allen["requests"])
    # A gene absent from the manifest (in that plane) is a clear error, before any download.
    with pytest.raises(ValueError, match="Gene 'Nrp1' has no sagittal experiment in the manifest"):
        manifest = allen["site"] / "manifest.csv"
        manifest.write_text("acronym,cutting_plane,Section_Data_ID\nNrp1,coronal,74272479\n")
        sf.datasets.aba_grids("Nrp1", "sagittal", manifest=manifest, **allen["kwargs"])


def test_ontology_adds_region_names(allen):
    adata = sf.datasets.aba_grids("Pdyn", ontology=True, **allen["kwargs"])
    assert {"acronym", "name"} <= set(adata.obs.columns)
    assert adata.obs["acronym"].notna().all()
    onto = sf.datasets.aba_ontology(cache_dir=allen["kwargs"]["cache_dir"], api_url=allen["kwargs"]["api_url"])
    assert isinstance(onto, sf.io.Ontology)
    assert onto.acronym_of(315) == "Isocortex"
    assert (allen["kwargs"]["cache_dir"] / "aba_200um" / "ontology" / "allen_structure_ontology.csv").is_file()


def test_wrong_checksum_is_a_clear_error(allen):
    served = allen["site"] / "grid_data" / "download" / "74272479"
    data = bytearray(served.read_bytes())
    data[100] ^= 0xFF
    served.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"Checksum mismatch for Nrp1_P56_coronal_74272479_200um\.zip"):
        sf.datasets.aba_grids("Nrp1", **allen["kwargs"])
    assert not (allen["kwargs"]["cache_dir"] / "aba_200um" / "grids" / "Nrp1_P56_coronal_74272479_200um.zip").exists()


def test_unknown_gene_is_a_clear_error(allen):
    with pytest.raises(ValueError, match="Gene 'Nope1' has no coronal ISH experiment"):
        sf.datasets.aba_grids(["Nrp1", "Nope1"], **allen["kwargs"])
    assert not any(p.startswith("/grid_data") for p in allen["requests"])  # nothing downloaded


def test_missing_file_on_server(allen):
    (allen["site"] / "grid_data" / "download" / "71717084").unlink()
    with pytest.raises(ConnectionError, match=r"Could not download Pdyn_P56_coronal_71717084_200um\.zip"):
        sf.datasets.aba_grids("Pdyn", **allen["kwargs"])


def test_spatialfactors_data_folder_without_network(monkeypatch, tmp_path):
    if not (ABA / "grids").is_dir():
        pytest.skip("shared Allen grids not available")
    # The shared data folder has the aba_200um/grids layout; nothing listens on the API address.
    monkeypatch.setenv("SPATIALFACTORS_DATA", str(ABA.parent))
    offline = {"api_url": "http://127.0.0.1:9", "annotation_url": "http://127.0.0.1:9/none.zip"}
    adata = sf.datasets.aba_grids(["Nrp1", "Pdyn"], **offline)
    assert adata.shape == (62529, 2)
    np.testing.assert_array_equal(adata.X, _direct().X)
    # An explicit cache_dir wins over the environment variable.
    with pytest.raises(ConnectionError, match="Allen API query for 'Nrp1' failed"):
        sf.datasets.aba_grids("Nrp1", cache_dir=tmp_path, **offline)


@pytest.mark.parametrize(
    ("genes", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "`genes` is empty"),
        (["Nrp1", "Nrp1"], {}, ValueError, r"`genes` repeats \['Nrp1'\]"),
        (["Nrp1'"], {}, ValueError, "Invalid gene symbols"),
        (["Nrp1"], {"plane": "axial"}, ValueError, "`plane` must be one of"),
        (["Nrp1"], {"annotation": False}, ValueError, "`annotation=False` is not possible"),
        (["Nrp1"], {"manifest": "no_such_manifest.csv"}, FileNotFoundError, "Manifest not found"),
    ],
)
def test_bad_input(allen, genes, kwargs, error, match):
    with pytest.raises(error, match=match):
        sf.datasets.aba_grids(genes, **allen["kwargs"], **kwargs)
    assert allen["requests"] == []


@pytest.mark.parametrize("how", ["random", "truncated", "zip64_claim"])
def test_damaged_cached_grid_says_to_download_again(tmp_path, how):
    # A damaged grid in the cache raised zipfile.BadZipFile (or allocated what its zip64 directory claims).
    import zipfile

    grids = tmp_path / "aba_200um" / "grids"
    grids.mkdir(parents=True)
    labels = np.ones((3, 2, 2), "<u4")
    header = "NDims = 3\nDimSize = 3 2 2\nElementType = {}\nElementSpacing = 200 200 200\nElementDataFile = {}\n"
    (tmp_path / "annotation.mhd").write_text(header.format("MET_UINT", "annotation.raw"))
    (tmp_path / "annotation.raw").write_bytes(labels.tobytes())
    archive = grids / "Gene_P56_coronal_5_200um.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("energy.mhd", header.format("MET_FLOAT", "energy.raw"))
        zf.writestr("energy.raw", np.ones(12, "<f4").tobytes())
        if how == "zip64_claim":  # the directory claims 64 GiB for the stored member
            zf.filelist[-1].file_size = zf.filelist[-1].compress_size = 64 * 2**30
    raw = archive.read_bytes()
    if how == "random":
        archive.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif how == "truncated":
        archive.write_bytes(raw[: len(raw) // 2])
    offline = {"api_url": "http://127.0.0.1:9", "annotation": tmp_path / "annotation.mhd"}
    with pytest.raises(ValueError, match=r"Gene_P56_coronal_5_200um\.zip: damaged .*delete it and download it again"):
        sf.datasets.aba_grids("Gene", cache_dir=tmp_path, **offline)
