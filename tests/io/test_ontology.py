from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
FILES = {
    "grid_release": DATA / "ontology" / "allen_structure_labels_grid_release.csv",
    "ccfv3_2017": DATA / "ontology" / "allen_structure_tree_ccfv3_2017.csv",
}
ANNOTATION = DATA / "grids" / "P56_Mouse_gridAnnotation.zip"
COLUMNS = [
    "id",
    "acronym",
    "name",
    "parent_structure_id",
    "structure_id_path",
    "color_hex_triplet",
    "graph_order",
    "depth",
]


@pytest.fixture(scope="module")
def grid_ids():
    if not ANNOTATION.is_file():
        pytest.skip("shared Allen 200 um data not available")
    labels, _ = sf.io.read_mhd(ANNOTATION)
    return labels[labels > 0], np.unique(labels[labels > 0])


@pytest.fixture(scope="module", params=list(FILES))
def onto(request):
    if not FILES[request.param].is_file():
        pytest.skip("shared Allen ontology files not available")
    return sf.io.read_ontology(FILES[request.param])


# -- the real Allen tables ------------------------------------------------------------------


def test_normalised_columns(onto):
    df = onto.df
    assert list(df.columns[:8]) == COLUMNS
    for col in ("id", "graph_order", "depth"):
        assert df[col].dtype == np.int64
    assert str(df["parent_structure_id"].dtype) == "Int64"
    np.testing.assert_array_equal(df.index, df["id"])
    assert 0 not in onto  # the 'void' background row of the CCFv3 table is dropped
    assert df.loc[997, "acronym"] == "root" and df.loc[997, "depth"] == 0
    assert df["parent_structure_id"].isna().sum() == 1
    assert df["color_hex_triplet"].str.fullmatch("[0-9A-Fa-f]{6}").all()
    # depth and parent agree with the id path.
    paths = df["structure_id_path"].str.strip("/").str.split("/")
    np.testing.assert_array_equal(df["depth"], paths.str.len() - 1)
    assert (df["graph_order"].diff().dropna() > 0).all()


def test_all_grid_ids_resolve(onto, grid_ids):
    _, ids = grid_ids
    assert len(ids) == 649
    assert all(i in onto for i in ids)
    assert (onto.acronym_of(ids) != "").all()


def test_both_tables_agree_on_grid_ids(grid_ids):
    if not all(f.is_file() for f in FILES.values()):
        pytest.skip("shared Allen ontology files not available")
    _, ids = grid_ids
    a, b = (sf.io.read_ontology(f) for f in FILES.values())
    assert all(a.ancestors(i) == b.ancestors(i) for i in ids)


def test_ancestors_and_descendants_consistent(onto, grid_ids):
    _, ids = grid_ids
    for i in ids:
        path = onto.ancestors(i)
        assert path[0] == 997 and path[-1] == i
        assert len(path) == onto.df.loc[i, "depth"] + 1
        assert onto.parent(i) == path[-2]
        assert i in onto.children(path[-2])
    by_path = onto.df["structure_id_path"]
    for acronym in (*sf.io.Ontology.PAPER_COARSE, "root", "CA1", "MOp"):
        top = onto.id_of(acronym)
        below = onto.descendants(top)
        assert below[0] == top and onto.descendants(top, include_self=False) == below[1:]
        assert all(top in onto.ancestors(d) for d in below)
        # ... and nothing else has `top` on its path.
        expected = set(by_path.index[by_path.str.contains(f"/{top}/", regex=False)])
        assert set(below) == expected
    assert len(onto.descendants("root")) == len(onto)


def test_known_mappings(onto):
    mop1 = onto.id_of("MOp1")  # primary motor cortex, layer 1
    isocortex = onto.id_of("Isocortex")
    assert onto.acronym_of(onto.ancestors(mop1)).tolist() == [
        "root",
        "grey",
        "CH",
        "CTX",
        "CTXpl",
        "Isocortex",
        "MO",
        "MOp",
        "MOp1",
    ]
    assert onto.at_depth(mop1, 5) == isocortex
    assert onto.at_depth([mop1], 7).tolist() == [onto.id_of("MOp")]
    grey = onto.id_of("grey")
    assert onto.at_depth([grey, mop1], 5).tolist() == [grey, isocortex]  # shallower ids stay
    ca1 = onto.id_of("CA1")
    targets = ["Isocortex", "HPF", "CA"]
    assert onto.map_to([mop1, ca1, grey], targets).tolist() == [isocortex, onto.id_of("CA"), -1]
    assert onto.map_to(np.array([[mop1, ca1]]), "CTX").tolist() == [[onto.id_of("CTX")] * 2]
    assert onto.paper_regions([mop1, ca1, grey], acronyms=True).tolist() == ["Isocortex", "HPF", ""]
    assert onto.paper_regions(mop1) == isocortex


def test_levels(onto):
    coarse = onto.level("coarse")
    assert onto.acronym_of(coarse).tolist() == list(sf.io.Ontology.PAPER_COARSE)
    assert len(coarse) == 12
    # The 12 are disjoint: no one is an ancestor of another.
    assert all(onto.map_to(c, [d for d in coarse if d != c]) == -1 for c in coarse)
    medium = onto.level("medium")
    assert len(medium) == 62  # the paper counts 66 (see Ontology.PAPER_COARSE)
    assert set(onto.paper_regions(medium)) == set(coarse)
    assert {onto.parent(m) for m in medium} == set(coarse)
    assert onto.level(0).tolist() == [997]
    assert set(onto.level(1)) == set(onto.children(997))
    assert (onto.df.loc[onto.level(4), "depth"] == 4).all()


def test_paper_regions_on_grid(onto, grid_ids):
    voxels, ids = grid_ids
    regions = onto.paper_regions(voxels, acronyms=True)
    counts = Counter(regions.tolist())
    assert sum(counts.values()) == 62_529
    assert set(counts) == {*sf.io.Ontology.PAPER_COARSE, ""}
    # Only unassigned grey matter, cortex and two ventricles fall outside the 12 regions.
    outside = ids[onto.paper_regions(ids) == -1]
    assert sorted(onto.acronym_of(outside).tolist()) == ["CTX", "V3", "V4r", "grey"]
    assert counts["Isocortex"] == int(np.isin(voxels, onto.descendants("Isocortex")).sum())


# -- construction from tables and bad input --------------------------------------------------


def _table():
    return pd.DataFrame(
        [
            (997, "root", "root", None, "/997/"),
            (8, "grey", "Basic cell groups and regions", 997, "/997/8/"),
            (315, "Isocortex", "Isocortex", 8, "/997/8/315/"),
            (320, "MOp1", "Primary motor area, Layer 1", 315, "/997/8/315/320/"),
        ],
        columns=["id", "acronym", "name", "parent_structure_id", "structure_id_path"],
    )


def test_paths_from_parents_and_aliases():
    table = _table().drop(columns="structure_id_path").iloc[::-1]  # children before parents
    table = table.rename(columns={"parent_structure_id": "parent_id"})
    table["rgb_triplet"] = [[255, 0, 16]] * 4
    onto = sf.io.Ontology(table)
    assert onto.df.loc[320, "structure_id_path"] == "/997/8/315/320/"
    assert onto.df.loc[320, "depth"] == 3
    assert onto.df.loc[320, "color_hex_triplet"] == "FF0010"
    assert onto.descendants(8) == [8, 315, 320]


def test_errors():
    onto = sf.io.Ontology(_table())
    with pytest.raises(KeyError, match="Acronym 'isocortex' is not in the ontology; did you mean 'Isocortex'"):
        onto.id_of("isocortex")
    with pytest.raises(KeyError, match=r"2 acronyms are not in the ontology, e.g. \['X', 'Y'\]"):
        onto.id_of(["X", "MOp1", "Y"])
    with pytest.raises(KeyError, match="Structure id 5 is not in the ontology"):
        onto.ancestors(5)
    with pytest.raises(KeyError, match="0 is the background"):
        onto.acronym_of(0)
    with pytest.raises(KeyError, match=r"2 structure ids are not in the ontology, e.g. \[0, 7\]"):
        onto.at_depth([320, 7, 0], 2)
    with pytest.raises(KeyError, match="not in the ontology"):
        onto.map_to([320], ["nope"])
    with pytest.raises(ValueError, match="must be integers"):
        onto.at_depth([np.nan], 1)
    with pytest.raises(ValueError, match="non-negative integer"):
        onto.at_depth([320], -1)
    with pytest.raises(ValueError, match="one of \\('coarse', 'medium'\\)"):
        onto.level("fine")
    with pytest.raises(KeyError, match="coarse regions .* are not in this ontology"):
        onto.paper_regions([320])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns="acronym"), r"lacks the column\(s\) \['acronym'\]"),
        (lambda t: t.drop(columns=["structure_id_path", "parent_structure_id"]), "structure_id_path or parent"),
        (lambda t: pd.concat([t, t.iloc[[1]]]), r"repeats structure ids, e.g. \[8\]"),
        (lambda t: t.assign(acronym=["a", "b", "b", "c"]), r"repeats acronyms, e.g. \['b'\]"),
        (lambda t: t.assign(structure_id_path=["/997/", "/997/8/", "/997/8/315/", "/997/8/315/"]), "does not end"),
        (lambda t: t.assign(structure_id_path=["/997/", "/997/8/", "/997/8/315/", "/997/x/"]), "malformed"),
        (lambda t: t.assign(parent_structure_id=[None, 997, 8, 8]), "disagrees with `structure_id_path`"),
        (lambda t: t.assign(structure_id_path=["/997/", "/997/8/", "/997/9/315/", "/997/8/315/320/"]), "e.g. \\[9\\]"),
        (
            lambda t: t.drop(columns="structure_id_path").assign(parent_structure_id=[None, 997, 320, 315]),
            "cycle",
        ),
        (
            lambda t: t.drop(columns="structure_id_path").assign(parent_structure_id=[None, 997, 8, 4]),
            "Structure 320 has the parent 4, which is not in the table",
        ),
    ],
)
def test_bad_tables(change, message):
    with pytest.raises(ValueError, match=message):
        sf.io.Ontology(change(_table()))


def test_read_ontology_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Ontology file not found"):
        sf.io.read_ontology(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("structure,label\n1,a\n")
    with pytest.raises(ValueError, match=r"bad.csv: The ontology table lacks the column\(s\) \['id', 'acronym'"):
        sf.io.read_ontology(bad)


# -- cycles: a hierarchy that loops back on itself would make every walk down it run forever ---


@pytest.mark.parametrize(
    ("paths", "parents", "column", "ids"),
    [
        (["/8/997/", "/997/8/", "/997/8/315/", "/997/8/315/320/"], None, "structure_id_path", r"\[8, 997\]"),
        (["/997/", "/997/8/315/8/", "/997/8/315/", "/997/8/315/320/"], None, "structure_id_path", r"\[8, 315\]"),
        (["/997/", "/320/8/", "/8/315/", "/315/320/"], None, "structure_id_path", r"\[8, 315, 320\]"),
        (None, [None, 320, 8, 315], "parent_structure_id", r"\[8, 315, 320\]"),
        (None, [None, 8, 997, 315], "parent_structure_id", r"\[8\]"),
    ],
)
def test_cycles_are_refused_naming_the_structures(tmp_path, paths, parents, column, ids):
    table = _table()
    if paths is None:
        table = table.drop(columns="structure_id_path").assign(parent_structure_id=parents)
    else:
        table = table.drop(columns="parent_structure_id").assign(structure_id_path=paths)
    table.to_csv(tmp_path / "s.csv", index=False)
    message = rf"s\.csv: The ontology's `{column}` forms a cycle through the structures {ids} .*fix the `{column}`"
    with pytest.raises(ValueError, match=message):
        sf.io.read_ontology(tmp_path / "s.csv")


def test_path_must_continue_the_parents_path():
    table = _table().drop(columns="parent_structure_id")
    table["structure_id_path"] = ["/997/", "/997/8/", "/997/8/315/", "/997/315/320/"]  # 315 is not under 997
    with pytest.raises(ValueError, match=r"Structure 320: .* does not continue the path of its parent 315, /997/8"):
        sf.io.Ontology(table)


def test_descendants_visit_each_structure_once():
    # Even should a loop get into the children (the constructor refuses them), the walk ends.
    onto = sf.io.Ontology(_table())
    onto._children[320].append(8)
    assert onto.descendants(8) == [8, 315, 320]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (np.array([320, 2**63], dtype=np.uint64), r"holds the id 9223372036854775808, beyond the int64 range"),
        (np.array([320, 1e19]), r"holds the id 1e\+19, beyond the int64 range"),
        (np.array([320, np.inf]), "NaN, infinite or fractional"),
    ],
)
def test_ids_beyond_int64_are_refused(ids, message):
    onto = sf.io.Ontology(_table())
    with pytest.raises(ValueError, match=message):
        onto.acronym_of(ids)
    np.testing.assert_array_equal(onto.at_depth(np.array([320, 8], dtype=np.uint64), 1), [8, 8])
