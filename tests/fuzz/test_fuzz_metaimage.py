"""Fuzz targets of ``sf.io.read_mhd``: .mhd/.raw pairs, inline .mha (plain and zlib), Allen zip archives."""

import re
import shutil
import tempfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from _fuzzing import (
    INTERESTING,
    ZIP64_CLAIM,
    check_reader,
    corpus,
    fuzz_settings,
    mutate_bytes,
    mutate_text,
    zip_with_claims,
)
from hypothesis import given
from hypothesis import strategies as st

import spatialfactors as sf

SEEDS = corpus("metaimage", "*.mh[ad]")
ZIP_SEEDS = corpus("metaimage_zip", "*.zip")
#: Archives of a few KB claiming 64 GiB (zip64) or damaged: refused, whatever they are mutated into.
REFUSED = corpus("metaimage_zip_refused", "*.zip")
TYPES = ["MET_CHAR", "MET_UCHAR", "MET_SHORT", "MET_USHORT", "MET_INT", "MET_UINT", "MET_LONG", "MET_ULONG"]
TYPES += ["MET_LONG_LONG", "MET_ULONG_LONG", "MET_FLOAT", "MET_DOUBLE"]
SIZES = dict(zip(TYPES, [1, 1, 2, 2, 4, 4, 4, 4, 8, 8, 4, 8], strict=True))


def _valid_volume(result):
    array, header = result
    assert isinstance(array, np.ndarray) and array.dtype.isnative
    assert array.shape == header["DimSize"]
    assert array.nbytes == int(np.prod(header["DimSize"])) * SIZES[header["ElementType"]]


def _split_local(raw: bytes) -> tuple[bytes, bytes]:
    """Header (through the ElementDataFile line) and inline data of an .mha."""
    end = raw.index(b"ElementDataFile")
    end = raw.index(b"\n", end) + 1
    return raw[:end], raw[end:]


@fuzz_settings(250)
@given(data=st.data())
def test_fuzz_metaimage_seeds(data):
    """Mutated seeds: header lines and fields, payload bytes (truncated, oversized, garbage)."""
    seed = data.draw(st.sampled_from(SEEDS), label="seed")
    head, payload = _split_local(seed.read_bytes()) if seed.suffix == ".mha" else (seed.read_bytes(), None)
    raw_name = None
    if payload is None:
        raw_name = next(line.split("=")[1].strip() for line in head.decode().splitlines() if "ElementDataFile" in line)
        payload = (seed.parent / raw_name).read_bytes()
    what = data.draw(st.sampled_from(["header", "payload", "both"]), label="mutate")
    if what in ("header", "both"):
        head = mutate_text(data.draw, head.decode(), sep=" ")
    if what in ("payload", "both"):
        payload = mutate_bytes(data.draw, payload)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / seed.name
        if raw_name is None:
            path.write_bytes(head + payload)
        else:
            path.write_bytes(head)
            (Path(tmp) / raw_name).write_bytes(payload)
        check_reader(lambda: sf.io.read_mhd(path), [path.name], _valid_volume)


def _dims():
    extreme = st.sampled_from([0, -1, 2**31, 2**32 + 1, 10**6, 10**12, 2**63, 10**30])
    return st.lists(st.one_of(st.integers(1, 4), extreme), min_size=0, max_size=4)


def _value(strategy):
    return st.one_of(strategy, st.sampled_from(INTERESTING))


@fuzz_settings(300)
@given(data=st.data())
def test_fuzz_metaimage_header_fields(data):
    """Headers built field by field: dims (incl. huge), element types, byte order, offsets, compression."""
    draw = data.draw
    dims = draw(_dims(), label="dims")
    etype = draw(st.one_of(st.sampled_from(TYPES), st.sampled_from(["MET_BOGUS", "MET_FLOAT_ARRAY", ""])))
    local = draw(st.booleans(), label="local")
    compressed = draw(st.booleans(), label="compressed")
    fields = {
        "ObjectType": "Image",
        "NDims": draw(st.one_of(st.just(str(len(dims))), _value(st.integers(-1, 5).map(str)))),
        "BinaryData": draw(st.sampled_from(["True", "True", "False", "1"])),
        draw(st.sampled_from(["BinaryDataByteOrderMSB", "ElementByteOrderMSB"])): draw(
            st.sampled_from(["False", "True", "yes", "0"])
        ),
        "ElementSpacing": " ".join(["200"] * draw(st.sampled_from([len(dims), len(dims), 1, 0, 5]))),
        "DimSize": " ".join(map(str, dims)),
        "ElementType": etype,
    }
    for key, strategy in {
        "HeaderSize": _value(st.sampled_from(["0", "-1", "4", "1000000000"])),
        "ElementNumberOfChannels": st.sampled_from(["1", "2", "0"]),
        "CompressedDataSize": _value(st.integers(0, 200).map(str)),
    }.items():
        if draw(st.booleans(), label=f"has {key}"):
            fields[key] = draw(strategy)
    if compressed:
        fields["CompressedData"] = "True"
    order = draw(st.permutations(list(fields)), label="order") if draw(st.integers(0, 9)) == 0 else list(fields)
    data_file = "LOCAL" if local else draw(st.sampled_from(["grid.raw", "grid.raw", "missing.raw", "", "%03d.raw"]))
    lines = [f"{k} = {fields[k]}" for k in order] + [f"ElementDataFile = {data_file}"]
    header = "\n".join(lines) + "\n"
    # Payload: right-sized (when small enough to write), truncated, oversized or arbitrary.
    natural = int(np.prod([d for d in dims if 0 < d <= 64] or [1])) * SIZES.get(etype, 4)
    body = draw(st.binary(min_size=natural, max_size=natural), label="samples") if natural <= 4096 else b""
    size = draw(st.sampled_from(["exact", "exact", "short", "long", "empty", "random"]), label="size")
    if size == "short":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    elif size == "long":
        body += draw(st.binary(min_size=1, max_size=16))
    elif size == "empty":
        body = b""
    elif size == "random":
        body = draw(st.binary(max_size=256))
    if compressed:
        body = zlib.compress(body)
        if draw(st.booleans(), label="corrupt stream"):
            body = mutate_bytes(draw, body, max_mutations=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("grid.mha" if local else "grid.mhd")
        if local:
            path.write_bytes(header.encode() + body)
        else:
            path.write_text(header)
            if data_file == "grid.raw":
                (Path(tmp) / "grid.raw").write_bytes(body)
        check_reader(lambda: sf.io.read_mhd(path), [path.name], _valid_volume)


def _mutate_members(draw, members: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Archive-level edits: drop, rename, duplicate or corrupt members, add headers and folders."""
    items = list(members.items())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "rename", "content", "extra_header", "folder", "duplicate"]))
        k = draw(st.integers(0, max(len(items) - 1, 0)))
        if kind == "drop" and items:
            del items[k]
        elif kind == "rename" and items:
            name = draw(st.sampled_from(["a/" + items[k][0], items[k][0].upper(), "../" + items[k][0], "x.mhd", "x/"]))
            items[k] = (name, items[k][1])
        elif kind == "content" and items:
            name, content = items[k]
            if name.endswith(".mhd"):
                content = mutate_text(draw, content.decode(errors="replace"), sep=" ")
            else:
                content = mutate_bytes(draw, content)
            items[k] = (name, content)
        elif kind == "extra_header":
            items.append(
                (draw(st.sampled_from(["other.mhd", "sub/energy.mhd", "a.mha"])), draw(st.binary(max_size=64)))
            )
        elif kind == "folder":
            items.append(("empty/", b""))
        elif kind == "duplicate" and items:
            items.append(items[k])
    return items


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_metaimage_zip(data):
    """Allen-style archives: member-level edits, compression methods, raw byte damage, `name=`."""
    draw = data.draw
    seed = draw(st.sampled_from(ZIP_SEEDS), label="seed")
    with zipfile.ZipFile(seed) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if draw(st.booleans(), label="edit members"):
        items = _mutate_members(draw, members)
    else:
        items = list(members.items())
    method = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
    claims = {}
    if items and draw(st.booleans(), label="directory claims other sizes"):  # zip64 when above 4 GiB
        sizes = st.sampled_from([None, 0, 1, 2**31, 2**32 - 1, 2**32, ZIP64_CLAIM, 2**63 - 1])
        name = draw(st.sampled_from([n for n, _ in items]), label="member")
        claims[name] = (draw(sizes, label="size"), draw(sizes, label="compressed size"))
    archive = zip_with_claims(items, compression=method, claims=claims)
    if draw(st.booleans(), label="damage bytes"):
        archive = mutate_bytes(draw, archive)
    name = draw(st.sampled_from([None, None, "energy", "gridAnnotation", "x", "energy.mhd"]), label="name")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / seed.name
        path.write_bytes(archive)
        check_reader(lambda: sf.io.read_mhd(path, name=name), [path.name], _valid_volume)


def test_corpus_seeds_are_valid(tmp_path):
    # The seeds must read cleanly, so that mutations start from valid files.
    for seed in SEEDS:
        array, header = sf.io.read_mhd(seed)
        assert array.shape == header["DimSize"]
    expected = {"compressed.mha": np.linspace(0, 1, 6).reshape((2, 3), order="F"), "inline.mha": np.arange(5)}
    for name, values in expected.items():
        np.testing.assert_array_equal(sf.io.read_mhd(corpus("metaimage", name)[0])[0], values)
    for seed in ZIP_SEEDS:
        shutil.copy(seed, tmp_path / seed.name)
        array, header = sf.io.read_mhd(tmp_path / seed.name)
        assert array.shape == header["DimSize"] and array.size == np.prod(header["DimSize"]) > 1


@pytest.mark.parametrize("archive", REFUSED, ids=lambda p: p.stem)
def test_refused_archives_allocate_nothing_of_their_claims(archive, tmp_path):
    # A 12 KB zip whose zip64 directory claims a 64 GiB member made read_mhd and read_aba allocate
    # 64 GiB; a bad CRC in data_set.xml gave a raw BadZipFile before the volume was read.
    path = tmp_path / archive.name
    shutil.copy(archive, path)
    labels = np.ones((2, 3, 2), "<u4")
    (tmp_path / "annotation.raw").write_bytes(labels.tobytes())
    (tmp_path / "annotation.mhd").write_text(
        "NDims = 3\nDimSize = 2 3 2\nElementType = MET_UINT\nElementDataFile = annotation.raw\n"
    )
    readers = [lambda: sf.io.read_aba(path, tmp_path / "annotation.mhd")]
    if "bad_crc" not in archive.stem:  # read_mhd does not read data_set.xml
        readers.append(lambda: sf.io.read_mhd(path))
    for read in readers:
        tracemalloc.start()
        try:
            refused = rf"{re.escape(path.name)}.*(damaged|truncated|compression method)"
            with pytest.raises(ValueError, match=refused) as info:
                read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB allocated before refusing"
        if "zip64" in archive.stem and "bzip2" not in archive.stem:  # refused from the directory alone
            assert "claims" in str(info.value) and "delete it and download it again" in str(info.value)


@fuzz_settings(100)
@given(data=st.data())
def test_fuzz_refused_archives(data):
    """The refused archives, byte-damaged: still refused or read, never an allocation of what they claim."""
    seed = data.draw(st.sampled_from(REFUSED), label="seed")
    archive = mutate_bytes(data.draw, seed.read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / seed.name
        path.write_bytes(archive)
        check_reader(lambda: sf.io.read_mhd(path), [path.name], _valid_volume)
