"""Downloads shared by the dataset loaders: the data root, pooch downloads with checksums, derived files.

The data root is ``cache_dir`` when given, else the folder in the ``SPATIALFACTORS_DATA``
environment variable, else ``pooch.os_cache("spatialfactors")``. Each data set has its own
subfolder there, laid out as the project's shared data folder (``aba_200um/``,
``starmap_visual_1020/``, ...), so a folder of earlier downloads is used without network.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pooch

from spatialfactors.io._zip import open_zip, read_member

#: Host of the raw files of public GitHub repositories (``<host>/<owner>/<repo>/<commit>/<path>``).
GITHUB_RAW = "https://raw.githubusercontent.com"


def _root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SPATIALFACTORS_DATA")
    return Path(env) if env else Path(pooch.os_cache("spatialfactors"))


def _fetch(url: str, fname: str, folder: Path, progress: bool, known_hash: str | None = None) -> Path:
    """Download into ``folder`` once, check ``known_hash`` (pooch's ``"sha256:..."``), name the file in errors."""
    import requests  # pooch's HTTP downloader

    try:
        return Path(pooch.retrieve(url, known_hash=known_hash, fname=fname, path=folder, progressbar=progress))
    except ValueError as err:
        if "hash" not in str(err):
            raise
        raise ValueError(
            f"Checksum mismatch for {fname} downloaded from {url}: expected {known_hash}. The download is corrupt "
            "or the file changed upstream; it was not saved."
        ) from err
    except requests.exceptions.RequestException as err:
        raise ConnectionError(f"Could not download {fname} from {url}: {err}") from err


def _git_blob_sha1(path: Path) -> str:
    """Return git's object id of a file's content: the SHA-1 of ``blob <size>``, a NUL byte and the content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Remote:
    """A file of a public GitHub repository at a fixed commit, with its checksum.

    ``sha256`` is that of the file; when it is unknown (a file too large to have been checked
    here), ``git_blob`` is the file's git object id in that commit, which pins its content too.
    """

    repo: str
    commit: str
    path: str
    sha256: str | None = None
    git_blob: str | None = None

    def url(self, base_url: str = GITHUB_RAW) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


def _download(remote: _Remote, fname: str, folder: Path, base_url: str, progress: bool) -> Path:
    """``remote`` as ``folder / fname``: downloaded once, then reused while its checksum matches."""
    known = f"sha256:{remote.sha256}" if remote.sha256 else None
    path = _fetch(remote.url(base_url), fname, folder, progress, known)
    if remote.git_blob is not None:
        found = _git_blob_sha1(path)
        if found != remote.git_blob:
            path.unlink()
            raise ValueError(
                f"Checksum mismatch for {fname} downloaded from {remote.url(base_url)}: git object id {found}, "
                f"expected {remote.git_blob} ({remote.repo} at {remote.commit}); it was removed."
            )
    return path


def _derived(folder: Path, fname: str, sha256: str | None, make: Callable[[], bytes], source: str) -> Path:
    """Make a file from another download (an archive member, a list read from an R object), once.

    Reused when present with the right checksum; otherwise made by ``make`` and checked before
    it is written, so a wrong file never lands in the folder.
    """
    target = folder / fname
    if target.is_file() and (sha256 is None or pooch.file_hash(str(target)) == sha256):
        return target
    data = make()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"Checksum mismatch for {fname} extracted from {source}: expected sha256:{sha256}; it was not saved."
        )
    part = target.with_name(target.name + ".part")
    part.write_bytes(data)
    part.replace(target)
    return target


def _zip_member(archive: Path, member: str, limit: int = 1 << 30) -> bytes:
    """Read ``member`` (a path inside the archive, or just its file name) from a zip archive.

    A damaged archive, or a member claiming more than ``limit`` bytes or more than the archive can
    hold, fails naming the archive and the fix (delete it and download again) before the member is read.
    """
    with open_zip(archive) as zf:
        names = zf.namelist()
        hits = [n for n in names if n == member] or [n for n in names if n.rsplit("/", 1)[-1] == member]
        if len(hits) != 1:
            raise ValueError(f"{archive.name} has {len(hits)} members named {member!r}; it holds {names[:20]}.")
        return read_member(zf, zf.getinfo(hits[0]), archive, limit)


def _dataset_folder(path: str | os.PathLike, subdir: str, needed: Iterable[str]) -> Path:
    """Return the folder of a local copy: ``path`` itself, or ``path / subdir`` when ``path`` is a data root."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Data folder not found: {folder}.")
    needed = list(needed)
    if not any((folder / n).exists() for n in needed) and (folder / subdir).is_dir():
        folder = folder / subdir
    return folder


def _require(folder: Path, names: Iterable[str], what: str) -> dict[str, Path]:
    """Return the paths of the named files in ``folder``; a missing one is an error naming it."""
    names = list(names)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: file {missing[0]!r} not found in {folder}"
            + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
            + f". Expected the original files {names}; pass `path=None` to download them."
        )
    return {n: folder / n for n in names}


def _local_or_download(
    path: str | os.PathLike | None,
    subdir: str,
    fname: str,
    remote: _Remote,
    what: str,
    base_url: str,
    progress: bool,
) -> Path:
    """One data file: from the folder ``path`` (or its ``subdir``), else from the data root, downloaded once."""
    if path is None:
        return _download(remote, fname, _root(None) / subdir, base_url, progress)
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a folder (a string or path) or None, got {path!r}.")
    return _require(_dataset_folder(path, subdir, [fname]), [fname], what)[fname]
