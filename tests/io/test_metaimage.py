import zipfile
import zlib

import numpy as np
import pytest

import spatialfactors as sf

TYPES = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}


def header_text(dims, etype="MET_FLOAT", data_file="grid.raw", msb=False, extra=""):
    return (
        "ObjectType = Image\nNDims = {n}\nBinaryData = True\nBinaryDataByteOrderMSB = {msb}\n{extra}"
        "ElementSpacing = {sp}\nDimSize = {dims}\nElementType = {etype}\nElementDataFile = {df}\n"
    ).format(
        n=len(dims),
        msb=msb,
        extra=extra,
        sp=" ".join(["200"] * len(dims)),
        dims=" ".join(map(str, dims)),
        etype=etype,
        df=data_file,
    )


def write_pair(folder, volume, etype="MET_FLOAT", msb=False, stem="grid", extra="", raw=None):
    """A .mhd/.raw pair with the volume stored x fastest (Fortran order)."""
    dtype = np.dtype(TYPES.get(etype, "f4")).newbyteorder(">" if msb else "<")
    (folder / f"{stem}.mhd").write_text(header_text(volume.shape, etype, f"{stem}.raw", msb, extra))
    data = volume.astype(dtype).tobytes(order="F") if raw is None else raw
    (folder / f"{stem}.raw").write_bytes(data)
    return folder / f"{stem}.mhd"


@pytest.fixture
def volume():
    return np.arange(2 * 3 * 4, dtype=np.float64).reshape((2, 3, 4)) - 5


@pytest.mark.parametrize("etype", list(TYPES))
@pytest.mark.parametrize("msb", [False, True])
def test_element_types_and_byte_order(tmp_path, volume, etype, msb):
    expected = np.abs(volume) if etype.startswith("MET_U") else volume
    array, header = sf.io.read_mhd(write_pair(tmp_path, expected, etype, msb=msb))
    assert array.shape == (2, 3, 4)
    assert array.dtype == np.dtype(TYPES[etype])  # native byte order whatever the file's
    assert array.dtype.isnative
    np.testing.assert_array_equal(array, expected.astype(TYPES[etype]))
    assert header["ElementType"] == etype and header["DimSize"] == (2, 3, 4)
    assert header["BinaryDataByteOrderMSB"] is msb


def test_big_endian_bytes_differ_and_element_byte_order_key(tmp_path, volume):
    # The same values written big-endian really have different bytes; read back, they agree.
    little = write_pair(tmp_path, volume, "MET_FLOAT", stem="le")
    big = write_pair(tmp_path, volume, "MET_FLOAT", msb=True, stem="be")
    assert (tmp_path / "le.raw").read_bytes() != (tmp_path / "be.raw").read_bytes()
    np.testing.assert_array_equal(sf.io.read_mhd(little)[0], sf.io.read_mhd(big)[0])
    text = big.read_text().replace("BinaryDataByteOrderMSB", "ElementByteOrderMSB")
    big.write_text(text)
    np.testing.assert_array_equal(sf.io.read_mhd(big)[0], volume.astype("f4"))


def test_fortran_order_is_x_fastest(tmp_path):
    # Bytes 0, 1, 2, ... fill the first axis first.
    (tmp_path / "g.mhd").write_text(header_text((2, 3, 4), "MET_UCHAR", "g.raw"))
    (tmp_path / "g.raw").write_bytes(bytes(range(24)))
    array, _ = sf.io.read_mhd(tmp_path / "g.mhd")
    assert array[1, 0, 0] == 1 and array[0, 1, 0] == 2 and array[0, 0, 1] == 6


def test_header_values_parsed(tmp_path, volume):
    path = write_pair(tmp_path, volume, extra="TransformMatrix = 1 0 0 0 1 0 0 0 1\nAnatomicalOrientation = RAI\n")
    _, header = sf.io.read_mhd(path)
    assert header["NDims"] == 3
    assert header["ElementSpacing"] == (200.0, 200.0, 200.0)
    assert header["TransformMatrix"] == (1.0, 0, 0, 0, 1, 0, 0, 0, 1)
    assert header["AnatomicalOrientation"] == "RAI"
    assert header["BinaryData"] is True
    assert header["ElementDataFile"] == "grid.raw"


def test_local_data_and_header_size(tmp_path, volume):
    text = header_text(volume.shape, "MET_FLOAT", "LOCAL").encode()
    (tmp_path / "g.mha").write_bytes(text + volume.astype("<f4").tobytes(order="F"))
    np.testing.assert_array_equal(sf.io.read_mhd(tmp_path / "g.mha")[0], volume)
    # HeaderSize skips a preamble in the data file; -1 means "the data are the last bytes".
    for size, pad in ((16, b"x" * 16), (-1, b"junk")):
        write_pair(tmp_path, volume, extra=f"HeaderSize = {size}\n", raw=pad + volume.astype("<f4").tobytes(order="F"))
        np.testing.assert_array_equal(sf.io.read_mhd(tmp_path / "grid.mhd")[0], volume)


def test_compressed_data(tmp_path, volume):
    packed = zlib.compress(volume.astype("<f4").tobytes(order="F"))
    path = write_pair(
        tmp_path, volume, extra=f"CompressedData = True\nCompressedDataSize = {len(packed)}\n", raw=packed
    )
    np.testing.assert_array_equal(sf.io.read_mhd(path)[0], volume)
    (tmp_path / "grid.raw").write_bytes(b"not zlib at all")
    path.write_text(path.read_text().replace(f"CompressedDataSize = {len(packed)}\n", ""))
    with pytest.raises(ValueError, match="cannot be decompressed"):
        sf.io.read_mhd(path)


def test_zip_members_and_name(tmp_path, volume):
    archive = tmp_path / "grids.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("energy.mhd", header_text(volume.shape, "MET_FLOAT", "energy.raw"))
        zf.writestr("energy.raw", volume.astype("<f4").tobytes(order="F"))
        zf.writestr("density.mhd", header_text(volume.shape, "MET_FLOAT", "density.raw"))
        zf.writestr("density.raw", (2 * volume).astype("<f4").tobytes(order="F"))
        zf.writestr("data_set.xml", "<section-data-set><id>1</id></section-data-set>")
    np.testing.assert_array_equal(sf.io.read_mhd(archive, name="energy")[0], volume)
    np.testing.assert_array_equal(sf.io.read_mhd(archive, name="density.mhd")[0], 2 * volume)
    with pytest.raises(ValueError, match=r"several MetaImages.*name="):
        sf.io.read_mhd(archive)
    with pytest.raises(FileNotFoundError, match=r"no MetaImage named 'intensity'.*energy"):
        sf.io.read_mhd(archive, name="intensity")


def test_zip_in_subfolder(tmp_path, volume):
    archive = tmp_path / "g.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("sub/energy.mhd", header_text(volume.shape, "MET_FLOAT", "energy.raw"))
        zf.writestr("sub/energy.raw", volume.astype("<f4").tobytes(order="F"))
    np.testing.assert_array_equal(sf.io.read_mhd(archive)[0], volume)


# -- bad input --------------------------------------------------------------------------------


def test_truncated_and_oversized_raw(tmp_path, volume):
    data = volume.astype("<f4").tobytes(order="F")
    path = write_pair(tmp_path, volume, raw=data[:-4])
    with pytest.raises(
        ValueError,
        match=r"grid.mhd: the data file 'grid.raw' is truncated: it has 92 bytes \(23 elements of MET_FLOAT\)",
    ):
        sf.io.read_mhd(path)
    write_pair(tmp_path, volume, raw=data + b"\0" * 8)
    with pytest.raises(ValueError, match=r"grid.mhd: .*larger than the header says: it has 104 bytes"):
        sf.io.read_mhd(path)


def test_dimsize_mismatch(tmp_path, volume):
    path = write_pair(tmp_path, volume)
    path.write_text(path.read_text().replace("DimSize = 2 3 4", "DimSize = 2 3 5"))
    with pytest.raises(ValueError, match=r"grid.mhd.*24 elements of MET_FLOAT.*DimSize 2 x 3 x 5"):
        sf.io.read_mhd(path)
    path.write_text(path.read_text().replace("DimSize = 2 3 5", "DimSize = 2 3"))
    with pytest.raises(ValueError, match=r"NDims = 3.*DimSize. has 2 values"):
        sf.io.read_mhd(path)
    path.write_text(path.read_text().replace("DimSize = 2 3", "DimSize = 2 3 4.5"))
    with pytest.raises(ValueError, match="positive integers"):
        sf.io.read_mhd(path)


def test_unknown_element_type(tmp_path, volume):
    path = write_pair(tmp_path, volume, etype="MET_FLOAT")
    path.write_text(path.read_text().replace("MET_FLOAT", "MET_HALF"))
    with pytest.raises(ValueError, match=r"grid.mhd: unknown or unsupported ElementType 'MET_HALF'"):
        sf.io.read_mhd(path)


def test_missing_raw(tmp_path, volume):
    path = write_pair(tmp_path, volume)
    (tmp_path / "grid.raw").unlink()
    with pytest.raises(FileNotFoundError, match=r"grid.mhd.*'grid.raw'.*not found"):
        sf.io.read_mhd(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        sf.io.read_mhd(tmp_path / "absent.mhd")
    archive = tmp_path / "g.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("energy.mhd", header_text(volume.shape, "MET_FLOAT", "energy.raw"))
    with pytest.raises(FileNotFoundError, match=r"g.zip::energy.mhd.*'energy.raw'.*not in the archive"):
        sf.io.read_mhd(archive)


def test_zip_without_metaimage(tmp_path):
    archive = tmp_path / "g.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data_set.xml", "<x/>")
    with pytest.raises(FileNotFoundError, match=r"g.zip: the archive holds no MetaImage header.*data_set.xml"):
        sf.io.read_mhd(archive)


def test_malformed_header(tmp_path, volume):
    path = write_pair(tmp_path, volume)
    path.write_text("NDims = 3\nthis is not a header line\n" + path.read_text())
    with pytest.raises(ValueError, match=r"grid.mhd: malformed MetaImage header line 2"):
        sf.io.read_mhd(path)
    path.write_text("NDims = 3\nDimSize = 2 3 4\nElementType = MET_FLOAT\n")
    with pytest.raises(ValueError, match="no `ElementDataFile`"):
        sf.io.read_mhd(path)
    path.write_text("NDims = 3\nElementType = MET_FLOAT\nElementDataFile = grid.raw\n")
    with pytest.raises(ValueError, match="no `DimSize`"):
        sf.io.read_mhd(path)
    (tmp_path / "g.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected a \.mhd or \.mha"):
        sf.io.read_mhd(tmp_path / "g.txt")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("BinaryData = False\n", "ASCII MetaImage data"),
        ("ElementNumberOfChannels = 3\n", "multi-channel"),
    ],
)
def test_unsupported_layouts(tmp_path, volume, extra, message):
    with pytest.raises(ValueError, match=message):
        sf.io.read_mhd(write_pair(tmp_path, volume, extra=extra))


def test_multi_file_data_unsupported(tmp_path, volume):
    path = write_pair(tmp_path, volume)
    path.write_text(path.read_text().replace("ElementDataFile = grid.raw", "ElementDataFile = slice%03d.raw 1 4 1"))
    with pytest.raises(ValueError, match="multi-file MetaImage data"):
        sf.io.read_mhd(path)


@pytest.mark.parametrize("spacing", ["0 200 200", "200 -200 200", "200 200 nan", "200 200 inf", "-0 -0 -0"])
def test_spacing_must_be_positive(tmp_path, volume, spacing):
    # An ElementSpacing of 0 or negative used to pass (and made read_aba's coordinates all 0 or mirrored).
    path = write_pair(tmp_path, volume)
    path.write_text(path.read_text().replace("ElementSpacing = 200 200 200", f"ElementSpacing = {spacing}"))
    with pytest.raises(ValueError, match=r"grid\.mhd: `ElementSpacing` .* must be positive distances .*fix the header"):
        sf.io.read_mhd(path)


def test_zip_named_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "grid.zip").write_bytes(b"<html>Service unavailable</html>")
    with pytest.raises(ValueError, match=r"grid\.zip: damaged or unsupported zip archive .*download it again"):
        sf.io.read_mhd(tmp_path / "grid.zip")
