"""Shared pieces of the reader fuzz targets: settings, mutation strategies and the property checked.

The property of every target: a reader given any file either returns a valid result or raises one
of a few plain exceptions whose message names the file; never an internal error (IndexError,
struct.error, UnicodeDecodeError, zlib.error, a pandas parser error, ...), a MemoryError, a large
allocation or a hang.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus"

#: ``SPATIALFACTORS_FUZZ_EXAMPLES`` replaces every target's CI example count (long local campaigns).
LONG_RUN = os.environ.get("SPATIALFACTORS_FUZZ_EXAMPLES", "").strip()
#: Exceptions a reader may raise on a bad file; exact types, so a subclass such as UnicodeDecodeError
#: or a pandas ParserError leaking out of a library counts as a crash.
ALLOWED = (ValueError, KeyError, FileNotFoundError, TypeError)
#: A reader of files of a few KB has no reason to allocate more than this.
MAX_ALLOCATION = 64 * 2**20
#: A reader of files of a few KB has no reason to take longer than this.
TIMEOUT_S = 20


def fuzz_settings(ci_examples: int) -> settings:
    """Fixed example count and derandomized in CI (failures reproduce); random and longer on request."""
    return settings(
        max_examples=int(LONG_RUN) if LONG_RUN else ci_examples,
        derandomize=not LONG_RUN,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


class Hang(BaseException):
    """Raised by the alarm: a BaseException so that no reader's ``except Exception`` swallows it."""


class ReaderCrash(AssertionError):
    """The reader failed in a way the property forbids."""


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"the reader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_reader(
    read: Callable[[], object],
    names: Iterable[str],
    validate: Callable[[object], None],
    *,
    also_allowed: tuple[type[Exception], ...] = (),
):
    """Run ``read()``; a result must pass ``validate``, an error must be allowed and name one of ``names``.

    Returns the result, or None when the reader refused the input with a clear error.
    """
    names = [str(n) for n in names]
    allowed = (*ALLOWED, *also_allowed)
    tracemalloc.start()
    try:
        with _time_limit(TIMEOUT_S):
            result = read()
    except allowed as err:
        if type(err) not in allowed:
            raise ReaderCrash(f"internal error leaked as {type(err).__name__}: {err}") from err
        message = str(err)
        if not any(n in message for n in names):
            raise ReaderCrash(f"{type(err).__name__} does not name the file ({names}): {message}") from err
        return None
    except Hang as err:
        raise ReaderCrash(str(err)) from None
    except Exception as err:
        raise ReaderCrash(f"crash: {type(err).__name__}: {err}") from err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if peak > MAX_ALLOCATION:
            raise ReaderCrash(f"the reader allocated {peak / 2**20:.0f} MiB for an input of a few KB")
    validate(result)
    return result


def same_outcome(first, second) -> bool:
    """Whether two reads of the same bytes agree: both refused (None) or the same AnnData."""
    if first is None or second is None:
        return first is None and second is None
    x1, x2 = first.X, second.X
    same_x = x1.shape == x2.shape and (x1 != x2).nnz == 0 if hasattr(x1, "nnz") else bool((x1 == x2).all())
    return (
        same_x
        and first.obs.equals(second.obs)
        and list(first.var_names) == list(second.var_names)
        and bool((first.obsm["spatial"] == second.obsm["spatial"]).all())
    )


def corpus(fmt: str, pattern: str = "*") -> list[Path]:
    """Seed files of one format, sorted (stable example order)."""
    files = sorted(p for p in (CORPUS / fmt).glob(pattern) if p.is_file())
    assert files, f"no seed files in corpus/{fmt}/{pattern}"
    return files


# -- mutations ----------------------------------------------------------------------------------

#: Values that break parsers: limits of integer types, special floats, separators, quotes, non-ASCII.
INTERESTING = (
    *("", "0", "-1", "1", "-0", "1.5", "-2.5", "1e3", "0x10", "007"),
    *("127", "255", "256", "32767", "65536", "2147483647", "2147483648", "4294967296"),
    *("-2147483649", "9223372036854775807", "9223372036854775808", "18446744073709551616"),
    *("1e308", "1e400", "-1e400", "nan", "NaN", "NA", "inf", "-inf", "None", "null", "True", "False"),
    *(" ", "\t", ",", ";", "=", "/", "//", "\\", '"', "'", '"a,b"', "\x00", "\r", "#"),
    *("é", "Ünïcödé", "日本語", "🧠", "\u200b", "\ufeff", "a" * 300),
    *("LOCAL", "LIST", "%d", "..", "../x", "/dev/null", "cell_1", "MET_FLOAT", "MET_BOGUS", "997", "/997/"),
)
_INVALID_BYTES = (b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\x00")


def mutate_bytes(draw, data: bytes, *, max_mutations: int = 4) -> bytes:
    """A few random byte-level edits: flips, overwrites with extreme values, inserts, deletes, truncation."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(["flip", "byte", "int", "insert", "delete", "truncate", "append", "dup"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and buf:
            buf[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "int":
            value = draw(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 2**16, 2**24, 0x7FFFFFFF]))
            order = draw(st.sampled_from(["big", "little"]))
            buf[pos : pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, order)
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "append":
            buf += draw(st.binary(min_size=1, max_size=64))
        elif kind == "dup" and buf:
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 32))]
    return bytes(buf)


def _field(draw) -> str:
    return draw(st.one_of(st.sampled_from(INTERESTING), st.text(max_size=12)))


def mutate_text(draw, text: str, *, sep: str | None = ",", max_mutations: int = 3) -> bytes:
    """Edits of a line-oriented text file: fields, lines, header, line endings, encoding, truncation."""
    lines = text.splitlines()
    encoding, ending = "utf-8", "\n"
    tail = b""
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(
            st.sampled_from(
                ["field", "field", "field", "drop_field", "add_field", "drop_line", "dup_line", "swap_lines"]
                + ["new_line", "header", "empty", "truncate", "encoding", "crlf", "bad_bytes", "bytes"]
            )
        )
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        split = (lambda s: s.split(sep)) if sep is not None else (lambda s: s.split())
        join = (sep if sep is not None else " ").join
        if kind in ("field", "drop_field", "add_field", "header") and lines:
            if kind == "header":
                i = 0
            fields = split(lines[i])
            j = draw(st.integers(0, len(fields)))
            if kind == "add_field":
                fields.insert(j, _field(draw))
            elif kind == "drop_field" and fields:
                del fields[min(j, len(fields) - 1)]
            elif fields:
                fields[min(j, len(fields) - 1)] = _field(draw)
            lines[i] = join(fields)
        elif kind == "drop_line" and lines:
            del lines[i]
        elif kind == "dup_line" and lines:
            lines.insert(i, lines[i])
        elif kind == "swap_lines" and len(lines) > 1:
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        elif kind == "new_line":
            lines.insert(i, draw(st.one_of(st.sampled_from(INTERESTING), st.text(max_size=40))))
        elif kind == "empty":
            lines = []
        elif kind == "truncate":
            joined = "\n".join(lines)
            lines = joined[: draw(st.integers(0, len(joined)))].split("\n")
        elif kind == "encoding":
            encoding = draw(st.sampled_from(["utf-16", "latin-1", "utf-8-sig", "utf-32"]))
        elif kind == "crlf":
            ending = draw(st.sampled_from(["\r\n", "\r"]))
        elif kind == "bad_bytes":
            tail += draw(st.sampled_from(_INVALID_BYTES))
        elif kind == "bytes":
            tail += draw(st.binary(max_size=24))
    out = ending.join(lines) + (ending if lines and draw(st.booleans()) else "")
    data = out.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")
    if tail:
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + tail + data[pos:]
    return data


# -- zip archives whose directory claims sizes ------------------------------------------------------

#: A zip64 directory stores 64-bit sizes: a few KB of archive can claim 64 GiB for a member.
ZIP64_CLAIM = 64 * 2**30


def zip_with_claims(
    members: Iterable[tuple[str, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    claims: dict[str, tuple[int | None, int | None]] | None = None,
) -> bytes:
    """A zip archive of ``members`` whose central directory claims other sizes for some of them.

    ``claims`` maps a member name to the (uncompressed, compressed) sizes its directory entry states
    (None keeps the true one); sizes above 4 GiB are written as a zip64 extra field, as zipfile does.
    The local headers and the data keep the true sizes, as in a damaged or crafted archive.
    """
    claims = claims or {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names, when a caller wants them
        for name, content in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), content, compress_type=compression)
        for info in zf.filelist:  # the central directory is written from these on close
            file_size, compress_size = claims.get(info.filename, (None, None))
            info.file_size = info.file_size if file_size is None else file_size
            info.compress_size = info.compress_size if compress_size is None else compress_size
    return buffer.getvalue()
