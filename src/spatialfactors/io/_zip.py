"""Zip archives read with bounded memory: the one way the readers and loaders open an archive and its members.

A zip's directory states each member's sizes, and a damaged or crafted archive of a few KB can
claim gigabytes (a zip64 record stores 64-bit sizes). Nothing here allocates from a claimed size
before checking that the archive can hold it: a member's compressed size must fit in the archive,
and its uncompressed size must be reachable from that with its compression method (stored: the
same; deflate: at most 1032 times; other methods are refused). Every error of :mod:`zipfile` or a
decompressor (a damaged directory, a truncated member, a bad CRC) becomes a :class:`ValueError`
naming the archive and saying to delete it and download it again.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: What zipfile and its decompressors raise on damaged archives and members.
ZIP_ERRORS = (
    *(zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError, OSError),
    UnicodeDecodeError,  # member names flagged UTF-8 that are not
)
#: The methods read, with the most one byte of a member can decompress to (deflate: 258 bytes per
#: 2 bits, 1032:1; zlib's technical details). bzip2 is refused: it has no useful bound (about 10^6:1
#: on constant data) and zipfile inflates a whole compressed chunk at once; LZMA members carry a
#: dictionary size that the decompressor allocates (4 GiB when damaged).
_MAX_RATIO = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}
_CHUNK = 1 << 20
_FIX = "delete it and download it again"


def damaged(path: str | os.PathLike, err: BaseException | str) -> ValueError:
    """Return the error for a damaged archive: which file, what zipfile said, and the fix."""
    what = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return ValueError(f"{path}: damaged or unsupported zip archive ({what}); {_FIX}.")


@contextlib.contextmanager
def open_zip(path: str | os.PathLike) -> Iterator[zipfile.ZipFile]:
    """Open a zip archive; zipfile's errors, also while reading members inside the block, become a ValueError.

    A :class:`FileNotFoundError` raised inside the block (a member that is not there) passes through.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            yield zf
    except FileNotFoundError:
        raise
    except ZIP_ERRORS as err:
        raise damaged(path, err) from None


def member_size(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | os.PathLike, limit: int | None = None) -> int:
    """Uncompressed size of a member, after checking that the archive can really hold it.

    Parameters
    ----------
    zf
        The open archive.
    info
        The member.
    path
        The archive's path, for the messages.
    limit
        The most bytes the caller can use (e.g. what a MetaImage header declares); a larger member
        is refused before anything is read.

    Returns
    -------
    The member's declared uncompressed size, checked.
    """
    where = f"{path}: member {info.filename!r}"
    if info.compress_type not in _MAX_RATIO:
        raise ValueError(
            f"{where} uses zip compression method {info.compress_type}; only stored and deflated members are read "
            "(Allen's archives are deflated): recompress the archive with deflate, or download it again."
        )
    archive = os.fstat(zf.fp.fileno()).st_size if hasattr(zf.fp, "fileno") else None
    if archive is not None and info.compress_size > archive:
        raise damaged(path, f"{where} claims {info.compress_size} compressed bytes, but the archive has {archive}")
    if info.file_size > _MAX_RATIO[info.compress_type] * info.compress_size + 64:
        raise damaged(
            path,
            f"{where} claims {info.file_size} bytes from {info.compress_size} compressed bytes, "
            "more than its compression method can produce",
        )
    if limit is not None and info.file_size > limit:
        raise ValueError(
            f"{where} has {info.file_size} bytes, more than the {limit} expected; the archive is damaged or not "
            f"the expected file ({_FIX})."
        )
    return info.file_size


@contextlib.contextmanager
def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | os.PathLike) -> Iterator[tuple[IO[bytes], int]]:
    """Open a member as a stream, with its size checked by :func:`member_size` (read it in bounded chunks)."""
    size = member_size(zf, info, path)
    with zf.open(info) as fh:
        yield fh, size


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | os.PathLike, limit: int | None = None) -> bytes:
    """Read the whole content of a member, checked by :func:`member_size`, in chunks."""
    size = member_size(zf, info, path, limit)
    with zf.open(info) as fh:
        return _read_chunks(fh, size, f"{path}: member {info.filename!r}")


def _read_chunks(fh: IO[bytes], size: int, where: str) -> bytes:
    """Read a member in chunks, never more than its declared ``size``."""
    buf = bytearray()
    while chunk := fh.read(_CHUNK):
        buf += chunk
        if len(buf) > size:  # zipfile stops at the declared size; a guard all the same
            raise ValueError(f"{where} holds more than the {size} bytes it declares ({_FIX}).")
    return bytes(buf)


def is_zip(path: Path) -> bool:
    """Tell whether a file is a zip archive, or should be one (a ``.zip`` name)."""
    return path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)
