"""Downloads of the canonical files, checksum verification, atomic writes.

Owns :func:`download` (mirrors tried in order; for CIFAR-10 the published
archive is fetched and the batch files extracted) and :func:`verify_file`
(SHA-256 or MD5 of the published bytes, or MD5 of the decompressed content
for re-compressed copies). Every file is written under a temporary name,
verified, then renamed into place, so a failed or interrupted download never
leaves a partial file under a canonical name. Failures are one-paragraph
:class:`bioplaus.errors.DatasetError` messages saying what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO

from bioplaus.data.formats import _is_gzip
from bioplaus.data.registry import DatasetInfo, RemoteFile, dataset_dir, dataset_info
from bioplaus.errors import DatasetError

_CHUNK = 1 << 20  # bytes per read when hashing or downloading


def _digest(stream: BinaryIO, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    for block in iter(lambda: stream.read(_CHUNK), b""):
        hasher.update(block)
    return hasher.hexdigest()


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as stream:
        return _digest(stream, algorithm)


def verify_file(path: str | os.PathLike, remote: RemoteFile) -> bool:
    """True when ``path`` holds ``remote``'s published bytes.

    Checks ``sha256`` if given, else ``md5``; a gzip file whose compressed
    bytes differ (re-compressed copy) still passes when its decompressed bytes
    match ``content_md5``, and so does an already-gunzipped copy. A file with
    no known checksum passes if it exists. A damaged gzip stream fails.
    """
    path = Path(path)
    if not path.is_file():
        return False
    if remote.sha256 is None and remote.md5 is None and remote.content_md5 is None:
        return True
    if remote.sha256 is not None and _file_digest(path, "sha256") == remote.sha256.lower():
        return True
    if remote.sha256 is None and remote.md5 is not None and _file_digest(path, "md5") == remote.md5.lower():
        return True
    if remote.content_md5 is not None:
        try:
            if _is_gzip(path):
                with gzip.open(path, "rb") as stream:
                    content = _digest(stream, "md5")
            else:
                content = _file_digest(path, "md5")
        except (OSError, EOFError, zlib.error):
            return False
        return content == remote.content_md5.lower()
    return False


_NETWORK_ERRORS = (urllib.error.URLError, OSError, TimeoutError, ValueError)


def _urlopen(url: str, timeout: float):
    """Open ``url`` for reading (module-level so tests can replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s)/file URLs from the registry


def _fetch_to(url: str, destination: Path, remote: RemoteFile, timeout: float) -> str | None:
    """Download ``url`` to a temporary name beside ``destination``, verify, rename.

    Returns None on success or a short reason on failure (the temporary file is
    removed). Network errors and checksum mismatches are both reported, not raised.
    """
    partial = destination.with_name(f".{destination.name}.part-{os.getpid()}")
    md5 = hashlib.md5()
    sha256 = hashlib.sha256()
    n_bytes = 0
    try:
        with _urlopen(url, timeout) as response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                md5.update(block)
                sha256.update(block)
                n_bytes += len(block)
    except _NETWORK_ERRORS as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        return f"{url} ({type(exc).__name__}: {reason})"
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    problem = None
    if remote.sha256 is not None and sha256.hexdigest() != remote.sha256.lower():
        problem = f"SHA-256 {sha256.hexdigest()} != expected {remote.sha256}"
    elif remote.sha256 is None and remote.md5 is not None and md5.hexdigest() != remote.md5.lower():
        problem = f"MD5 {md5.hexdigest()} != expected {remote.md5}"
    if problem is not None:
        partial.unlink(missing_ok=True)
        return f"{url} (checksum mismatch: {problem}; {n_bytes} bytes received, partial file deleted)"
    os.replace(partial, destination)
    return None


def _fetch_verified(remote: RemoteFile, destination: Path, timeout: float, dataset: DatasetInfo) -> None:
    failures = []
    for url in remote.urls:
        failure = _fetch_to(url, destination, remote, timeout)
        if failure is None:
            return
        failures.append(failure)
    raise DatasetError(_download_failure_message(dataset, remote, destination, failures))


def _download_failure_message(info: DatasetInfo, remote: RemoteFile, destination: Path,
                              failures: list[str]) -> str:
    offline = all("checksum mismatch" not in f for f in failures)
    cause = ("Probably this machine is offline or the hosts are unreachable"
             if offline else "A server sent data that does not match the published checksum")
    ways = [f"copy the canonical file {remote.filename} into {destination.parent} by other means"]
    if info.apt_package:
        ways.insert(0, f"install it with `apt-get install {info.apt_package}`")
    return (
        f"Could not download {remote.filename} of dataset {info.name!r} ({info.label}) into "
        f"{destination.parent}: tried {'; '.join(failures)}. {cause}. "
        f"Retry later, or {', or '.join(ways)}, then run again."
    )


def _extract_members(info: DatasetInfo, archive_path: Path, wanted: list[RemoteFile], target: Path) -> None:
    """Extract the ``wanted`` members of the archive into ``target`` (verified, atomic)."""
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            for remote in wanted:
                try:
                    member = archive.getmember(remote.member)
                except KeyError:
                    raise DatasetError(f"Archive {archive_path} does not contain {remote.member}; "
                                       f"it is not the canonical {info.archive.filename}.") from None
                if not member.isfile():
                    raise DatasetError(f"Archive {archive_path}: {remote.member} is not a regular file.")
                destination = target / remote.filename
                partial = destination.with_name(f".{destination.name}.part-{os.getpid()}")
                try:
                    source = archive.extractfile(member)
                    with source, open(partial, "wb") as out:
                        for block in iter(lambda: source.read(_CHUNK), b""):
                            out.write(block)
                    if not verify_file(partial, remote):
                        raise DatasetError(
                            f"{remote.member} extracted from {archive_path} does not match its "
                            f"published checksum (MD5 {remote.md5}); the archive is damaged."
                        )
                    os.replace(partial, destination)
                finally:
                    partial.unlink(missing_ok=True)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"Cannot unpack {archive_path}: {exc}. The archive is damaged or "
                           "truncated; delete it and download again.") from exc


def download(name: str, data_dir: str | os.PathLike, *, timeout: float = 60) -> list[Path]:
    """Fetch the canonical files of ``name`` into ``<data_dir>/<name>/``.

    Files already there and matching their checksum are not fetched again.
    Each file is downloaded to a temporary name, its checksum verified, then
    renamed into place; mirrors are tried in order. For CIFAR-10 the archive
    is fetched (or taken from the folder if already there and verified), the
    batch files are extracted and verified, and a downloaded archive is
    deleted. Returns the paths of all canonical files (empty for embedded
    sets). Raises DatasetError (one paragraph) when a file cannot be fetched
    or fails its checksum; ``timeout`` is in seconds per connection.
    """
    info = dataset_info(name)
    if info.embedded:
        return []
    target = dataset_dir(name, data_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"Cannot create the data folder {target} for dataset {name!r}: "
                           f"{exc.strerror or exc}. Choose another --data-dir.") from exc
    missing = [r for r in info.files if not verify_file(target / r.filename, r)]
    if missing and info.archive is not None:
        archive_path = target / info.archive.filename
        downloaded = False
        if not verify_file(archive_path, info.archive):
            _fetch_verified(info.archive, archive_path, timeout, info)
            downloaded = True
        try:
            _extract_members(info, archive_path, missing, target)
        finally:
            if downloaded:
                archive_path.unlink(missing_ok=True)
    else:
        for remote in missing:
            _fetch_verified(remote, target / remote.filename, timeout, info)
    return [target / r.filename for r in info.files]
