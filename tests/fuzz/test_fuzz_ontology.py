"""Fuzz target of ``sf.io.read_ontology``: Allen structure tables (CSV)."""

import tempfile
from pathlib import Path

from _fuzzing import check_reader, corpus, fuzz_settings, mutate_text
from hypothesis import given
from hypothesis import strategies as st

import spatialfactors as sf

SEEDS = corpus("ontology", "*.csv")
RENAMES = ["id", "acronym", "name", "parent_structure_id", "structure_id_path", "structure_id", "parent_id"]
RENAMES += ["graph_order", "color_hex_triplet", "rgb_triplet", "depth", "", "ID", "id.1"]


def _valid_ontology(onto):
    assert isinstance(onto, sf.io.Ontology) and len(onto) > 0
    df = onto.df
    assert df.index.is_unique and df["acronym"].is_unique
    for sid in df.index:
        path = onto.ancestors(int(sid))
        assert path[-1] == sid and all(a in onto for a in path)
        assert df.at[sid, "depth"] == len(path) - 1


@fuzz_settings(250)
@given(data=st.data())
def test_fuzz_ontology_csv(data):
    """Malformed rows, bad or missing columns, cycles, unknown parents, non-numeric ids, encodings, unicode."""
    seed = data.draw(st.sampled_from(SEEDS), label="seed")
    text = seed.read_text()
    if data.draw(st.booleans(), label="rename a column"):
        header, _, rest = text.partition("\n")
        columns = header.split(",")
        k = data.draw(st.integers(0, len(columns) - 1))
        columns[k] = data.draw(st.sampled_from(RENAMES))
        text = ",".join(columns) + "\n" + rest
    raw = mutate_text(data.draw, text, sep=",")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / seed.name
        path.write_bytes(raw)
        check_reader(lambda: sf.io.read_ontology(path), [path.name], _valid_ontology)


def test_corpus_seeds_are_valid():
    for seed in SEEDS:
        onto = sf.io.read_ontology(seed)
        assert len(onto) == 6 and onto.ancestors("MOp1") == [997, 8, 567, 315, 320]
        assert onto.df.at[320, "color_hex_triplet"] == ("" if seed.name == "parents.csv" else "1F9D5A")
