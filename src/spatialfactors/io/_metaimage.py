"""MetaImage (``.mhd``/``.raw``, ``.mha``) reader, also reading straight from Allen's ``.zip`` grid downloads.

The format (ITK MetaIO) is a text header of ``Key = Value`` lines ending with ``ElementDataFile``,
then raw samples, x fastest. Allen serves every 200 um expression grid and the grid annotation
as a zip with one ``.mhd``/``.raw`` pair (``energy.mhd`` or ``gridAnnotation.mhd``).
"""

from __future__ import annotations

import math
import os
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from ._zip import is_zip, open_member, open_zip

# MetaIO element types and their sizes (MetaIO's metaTypes.h: MET_LONG/MET_ULONG are 4 bytes,
# the 8-byte integers are MET_LONG_LONG/MET_ULONG_LONG).
_ELEMENT_TYPES: dict[str, str] = {
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
_HEADER_SUFFIXES = (".mhd", ".mha")
_CHUNK = 1 << 20
_MAX_HEADER_BYTES = 1 << 16  # headers are a few hundred bytes; stop before reading a binary file as text
_TEXT_KEYS = ("ElementDataFile", "ElementType", "ObjectType", "AnatomicalOrientation", "Comment", "Name")
_FLOAT_KEYS = ("ElementSpacing", "ElementSize", "Offset", "Position", "Origin", "CenterOfRotation", "TransformMatrix")
_TUPLE_KEYS = ("DimSize", *_FLOAT_KEYS)


def _parse_value(key: str, text: str):
    """Header value as bool, number, tuple of numbers or str (per-dimension keys always tuples)."""
    if key in _TEXT_KEYS:
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    parts = text.split()
    try:
        values = tuple(float(p) if key in _FLOAT_KEYS else int(p) for p in parts)
    except ValueError:
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            return text
    if len(values) == 1 and key not in _TUPLE_KEYS:
        return values[0]
    return values


def _parse_header(raw: bytes, where: str) -> tuple[dict, int]:
    """Parse header lines up to ``ElementDataFile``; return the header and the byte offset after it."""
    header: dict = {}
    pos = 0
    lineno = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        line_bytes = raw[pos:end]
        pos = end
        lineno += 1
        try:
            line = line_bytes.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError(f"{where}: line {lineno} of the MetaImage header is not text.") from None
        if not line:
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or " " in key:
            raise ValueError(
                f"{where}: malformed MetaImage header line {lineno}: {line[:80]!r} (expected 'Key = Value')."
            )
        header[key] = _parse_value(key, value)
        if key == "ElementDataFile":  # MetaIO: always the last header field
            return header, pos
    raise ValueError(f"{where}: the MetaImage header has no `ElementDataFile` line.")


def _element_dtype(header: dict, where: str) -> np.dtype:
    etype = header.get("ElementType")
    if etype is None:
        raise ValueError(f"{where}: the MetaImage header has no `ElementType`.")
    if etype not in _ELEMENT_TYPES:
        raise ValueError(
            f"{where}: unknown or unsupported ElementType {etype!r}; supported: {', '.join(_ELEMENT_TYPES)}."
        )
    msb = bool(header.get("ElementByteOrderMSB", False) or header.get("BinaryDataByteOrderMSB", False))
    return np.dtype(_ELEMENT_TYPES[etype]).newbyteorder(">" if msb else "<")


def _shape(header: dict, where: str) -> tuple[int, ...]:
    dims = header.get("DimSize")
    if dims is None:
        raise ValueError(f"{where}: the MetaImage header has no `DimSize`.")
    if not isinstance(dims, tuple) or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ValueError(f"{where}: `DimSize` must be positive integers, got {dims!r}.")
    ndims = header.get("NDims", len(dims))
    if ndims != len(dims):
        raise ValueError(f"{where}: `NDims = {ndims}` but `DimSize` has {len(dims)} values {dims}.")
    for key in ("ElementSpacing", "ElementSize"):
        if key in header and (not isinstance(header[key], tuple) or len(header[key]) != len(dims)):
            raise ValueError(f"{where}: `{key}` {header[key]!r} does not have one value per dimension ({len(dims)}).")
        if key in header and not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in header[key]):
            raise ValueError(
                f"{where}: `{key}` {' '.join(map(str, header[key]))} must be positive distances (one per axis, e.g. "
                f"'{key} = 200 200 200' for Allen's 200 um grids); fix the header."
            )
    return dims


def _check_supported(header: dict, where: str) -> None:
    if header.get("BinaryData", True) is not True:
        raise ValueError(f"{where}: ASCII MetaImage data (`BinaryData = False`) is not supported.")
    channels = header.get("ElementNumberOfChannels", 1)
    if channels != 1:
        raise ValueError(
            f"{where}: multi-channel MetaImage data (ElementNumberOfChannels = {channels}) is not supported."
        )
    data_file = header["ElementDataFile"]
    if data_file.upper().startswith("LIST") or "%" in data_file:  # slice lists / numbered slice files
        raise ValueError(f"{where}: multi-file MetaImage data (`ElementDataFile = {data_file}`) is not supported.")


def _read_exact(stream: IO[bytes], out: np.ndarray) -> int:
    """Fill ``out`` from ``stream`` without an intermediate copy; return the number of bytes read."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = 0
    while got < len(view):  # in chunks: a stream may copy what one call asks for
        n = stream.readinto(view[got : got + _CHUNK])
        if not n:
            break
        got += n
    return got


def _decode(stream: IO[bytes], available: int, header: dict, where: str, data_name: str) -> np.ndarray:
    """Read the samples of ``header`` from ``stream`` (``available`` bytes left in it) into a native array.

    The size the header declares is checked against the bytes there are before anything is
    allocated, so a damaged ``DimSize`` cannot ask for gigabytes.
    """
    dims = _shape(header, where)
    dtype = _element_dtype(header, where)
    count = math.prod(dims)  # exact for any DimSize (np.prod would overflow int64)
    expected = count * dtype.itemsize
    skip = header.get("HeaderSize", 0)
    compressed = header.get("CompressedData", False) is True
    if skip == -1 and not compressed:  # MetaIO: -1 means the data are the last bytes of the file
        skip = max(available - expected, 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError(f"{where}: invalid `HeaderSize = {header.get('HeaderSize')!r}`.")
    if skip > available:
        raise ValueError(f"{where}: `HeaderSize = {skip}` but {data_name} has only {available} bytes.")
    stream.read(skip)
    available -= skip
    what = f"DimSize {' x '.join(map(str, dims))} of {header['ElementType']} ({expected} bytes)"
    if compressed:
        size = header.get("CompressedDataSize", available)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= available:
            raise ValueError(f"{where}: `CompressedDataSize = {size!r}` but {data_name} has {available} bytes left.")
        # Inflate at most one byte more than the header declares: enough to tell that it does not fit.
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(stream.read(size), min(expected + 1, sys.maxsize))
        except zlib.error as err:
            raise ValueError(f"{where}: the compressed data in {data_name} cannot be decompressed ({err}).") from None
        if len(data) > expected or inflate.unconsumed_tail:
            raise ValueError(f"{where}: {data_name} decompresses to more than the {expected} bytes of {what}.")
        if not inflate.eof:
            raise ValueError(
                f"{where}: the compressed data in {data_name} end early: {len(data)} bytes decompressed, "
                f"but {what}; the file is truncated or damaged."
            )
        if len(data) != expected:
            raise ValueError(f"{where}: {data_name} decompresses to {len(data)} bytes, but {what} needs {expected}.")
        out = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))
    else:
        if available != expected:
            kind = "truncated" if available < expected else "larger than the header says"
            hint = ""
            if available % dtype.itemsize == 0:
                hint = f" ({available // dtype.itemsize} elements of {header['ElementType']})"
            raise ValueError(
                f"{where}: {data_name} is {kind}: it has {available} bytes{hint} after the header offset, "
                f"but {what}; check DimSize, ElementType and that the file is complete."
            )
        out = np.empty(count, dtype=dtype.newbyteorder("="))
        got = _read_exact(stream, out)
        if got != expected:
            raise ValueError(f"{where}: {data_name} is truncated: read {got} of {expected} bytes.")
        if dtype != out.dtype and dtype.itemsize > 1:  # file byte order differs from the machine's
            out.byteswap(inplace=True)
    # MetaImage stores x fastest: DimSize order with Fortran layout (AP, DV, ML for Allen grids).
    return out.reshape(dims, order="F")


def _pick_member(names: list[str], name: str | None, where: str) -> str:
    headers = [n for n in names if not n.endswith("/") and PurePosixPath(n).suffix.lower() in _HEADER_SUFFIXES]
    if not headers:
        raise FileNotFoundError(f"{where}: the archive holds no MetaImage header (.mhd/.mha); members: {names}.")
    if name is not None:
        chosen = [n for n in headers if PurePosixPath(n).stem == name or PurePosixPath(n).name == name]
        if not chosen:
            stems = [PurePosixPath(n).stem for n in headers]
            raise FileNotFoundError(f"{where}: no MetaImage named {name!r} in the archive; available: {stems}.")
        if len(chosen) > 1:
            raise ValueError(f"{where}: several MetaImages match {name!r}: {chosen}; pass the full member name.")
        return chosen[0]
    if len(headers) > 1:
        stems = [PurePosixPath(n).stem for n in headers]
        raise ValueError(f"{where}: the archive holds several MetaImages {stems}; choose one with `name=`.")
    return headers[0]


def _read_from_zip(path: Path, name: str | None) -> tuple[np.ndarray, dict]:
    # A damaged archive fails inside zipfile or a decompressor: `open_zip` says which archive and the fix.
    with open_zip(path) as zf:
        return _read_zip_members(zf, path, name)


def _read_zip_members(zf: zipfile.ZipFile, path: Path, name: str | None) -> tuple[np.ndarray, dict]:
    names = zf.namelist()
    member = _pick_member(names, name, str(path))
    where = f"{path}::{member}"
    info = zf.getinfo(member)
    with open_member(zf, info, path) as (fh, size):
        head = fh.read(min(size, _MAX_HEADER_BYTES))
    header, offset = _parse_header(head, where)
    _check_supported(header, where)
    data_file = header["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        data_member, start = member, offset
    else:
        data_member = str(PurePosixPath(member).parent / data_file).removeprefix("./")
        start = 0
        if data_member not in names:
            raise FileNotFoundError(
                f"{where}: the data file {data_file!r} named by `ElementDataFile` is not in the archive; "
                f"members: {names}."
            )
    # `open_member` checks the member's claimed size against the archive; `_decode` checks it against
    # the header's: both before anything of that size is allocated.
    with open_member(zf, zf.getinfo(data_member), path) as (fh, size):
        fh.read(start)
        array = _decode(fh, size - start, header, where, f"{data_member!r} in the archive")
    return array, header


def _read_from_mhd(path: Path) -> tuple[np.ndarray, dict]:
    where = str(path)
    with open(path, "rb") as fh:
        head = fh.read(_MAX_HEADER_BYTES)
    header, offset = _parse_header(head, where)
    _check_supported(header, where)
    data_file = header["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        data_path, start = path, offset
    else:
        data_path, start = path.parent / data_file, 0  # MetaIO: relative to the header's folder
        try:
            found = data_path.is_file()
        except OSError as err:  # e.g. a damaged name too long for the file system
            raise ValueError(
                f"{where}: `ElementDataFile = {data_file[:80]!r}` is not a usable file name ({err.strerror})."
            ) from None
        if not found:
            raise FileNotFoundError(
                f"{where}: the data file {data_file!r} named by `ElementDataFile` was not found next to the header "
                f"({data_path})."
            )
    size = os.path.getsize(data_path)
    with open(data_path, "rb") as fh:
        fh.seek(start)
        array = _decode(fh, size - start, header, where, f"the data file {data_path.name!r}")
    return array, header


def read_mhd(path: str | os.PathLike, *, name: str | None = None) -> tuple[np.ndarray, dict]:
    r"""Read a MetaImage volume from a ``.mhd``/``.mha`` file or from an Allen ``.zip`` download.

    Allen's 3D grids (expression ``energy``, ``density``, ``intensity`` and the grid annotation)
    are served as zip archives holding one ``.mhd`` header and its ``.raw`` samples; they are read
    directly, without unpacking. Other archive members (e.g. ``data_set.xml``) are ignored.

    Parameters
    ----------
    path
        A ``.mhd`` header (its data file, ``ElementDataFile``, is looked up relative to it), a
        ``.mha`` file with the data inline, or a ``.zip`` archive.
    name
        Stem of the header to read from an archive holding several (e.g. ``"energy"``).

    Returns
    -------
    The volume, shaped ``DimSize`` (x fastest, i.e. Fortran order: ``(67, 41, 58)`` with axes AP, DV,
    ML for Allen's 200 um grids) in native byte order, and the header as a dict (``NDims``, ``DimSize``,
    ``ElementType``, ``ElementSpacing``, ``ElementDataFile``, ... with numbers parsed).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> import spatialfactors as sf
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "grid.mhd").write_text(
    ...     "NDims = 3\nDimSize = 2 3 4\nElementType = MET_FLOAT\nElementSpacing = 200 200 200\n"
    ...     "ElementByteOrderMSB = False\nElementDataFile = grid.raw\n"
    ... )
    >>> volume = np.arange(24, dtype="<f4").reshape((2, 3, 4), order="F")
    >>> _ = (folder / "grid.raw").write_bytes(volume.tobytes(order="F"))
    >>> array, header = sf.io.read_mhd(folder / "grid.mhd")
    >>> array.shape, header["ElementSpacing"], bool((array == volume).all())
    ((2, 3, 4), (200.0, 200.0, 200.0), True)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MetaImage file or archive not found: {path}.")
    if is_zip(path):  # also a damaged .zip: the archive reader names it and the fix
        return _read_from_zip(path, name)
    if path.suffix.lower() not in _HEADER_SUFFIXES:
        raise ValueError(f"{path}: expected a .mhd or .mha MetaImage header or a .zip archive.")
    return _read_from_mhd(path)
