"""Fuzz targets of the Allen gene lookup: the experiment manifest (CSV) and the API's JSON answer."""

import io
import json
import tempfile
from pathlib import Path
from unittest import mock

from _fuzzing import check_reader, corpus, fuzz_settings, mutate_bytes, mutate_text
from hypothesis import given
from hypothesis import strategies as st

from spatialfactors.datasets import _aba

MANIFEST = corpus("aba", "*.csv")[0]
ANSWER = corpus("aba", "*.json")[0]
JSON_VALUES = [None, True, 0, -1, 1.5, 2**64, "", "74272479", "x", [], {}, [1], {"id": None}, {"id": "x"}]


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_aba_manifest(data):
    """Allen's experiment list: malformed rows, missing columns, odd ids and planes, encodings."""
    genes = data.draw(st.lists(st.sampled_from(["Nrp1", "Pdyn", "0610005G16Rik"]), min_size=1, max_size=2, unique=True))
    plane = data.draw(st.sampled_from(["coronal", "sagittal"]), label="plane")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MANIFEST.name
        path.write_bytes(mutate_text(data.draw, MANIFEST.read_text(), sep=","))

        def validate(found):
            assert list(found) == genes and all(isinstance(v, int) for v in found.values())

        check_reader(lambda: _aba._from_manifest(genes, plane, path), [path.name], validate)


def _json_edit(draw, answer):
    """Replace one value somewhere in the answer by a value of another type."""
    answer = json.loads(json.dumps(answer))
    where = draw(st.sampled_from(["success", "msg", "row", "id"]))
    value = draw(st.sampled_from(JSON_VALUES))
    if where in ("success", "msg"):
        answer[where] = value
    elif answer["msg"]:
        k = draw(st.integers(0, len(answer["msg"]) - 1))
        if where == "row":
            answer["msg"][k] = value
        else:
            answer["msg"][k]["id"] = value
    return answer


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_aba_api_answer(data):
    """The RMA query's JSON answer: wrong types, missing keys, truncated or non-JSON bodies."""
    answer = json.loads(ANSWER.read_text())
    mode = data.draw(st.sampled_from(["json", "json", "text", "bytes"]), label="damage")
    if mode == "json":
        body = json.dumps(_json_edit(data.draw, answer)).encode()
    elif mode == "text":
        body = mutate_text(data.draw, json.dumps(answer, indent=1), sep=" ")
    else:
        body = mutate_bytes(data.draw, ANSWER.read_bytes())
    with mock.patch.object(_aba.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(body)):
        # A failed query is a ConnectionError: also a clear error of this reader.
        read = lambda: _aba._from_api("Nrp1", "coronal", "http://api")
        check_reader(read, ["Nrp1"], _valid_id, also_allowed=(ConnectionError,))


def _valid_id(found):
    assert isinstance(found, int) and not isinstance(found, bool)


def test_corpus_seeds_are_valid(tmp_path):
    assert _aba._from_manifest(["Nrp1", "Pdyn"], "coronal", MANIFEST) == {"Nrp1": 74272479, "Pdyn": 71717084}
    assert _aba._from_manifest(["0610005G16Rik"], "sagittal", MANIFEST) == {"0610005G16Rik": 74357755}
    with mock.patch.object(_aba.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(ANSWER.read_bytes())):
        assert _aba._from_api("Nrp1", "coronal", "http://api") == 74272479
