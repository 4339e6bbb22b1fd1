"""Tests of bioplaus.data.download: checksum verification and verified, atomic downloads.

No test touches the network: downloads use ``file://`` URLs or a replaced URL
opener.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import pytest

from bioplaus.data import DATASETS, DatasetInfo, download, load_dataset, verify_file
from bioplaus.errors import DatasetError
from datafiles import (
    DEBIAN_FASHION,
    cifar_py2_pickle,
    md5_of,
    needs_debian_fashion,
    random_cifar,
    tiny_idx_files,
    tiny_idx_info,
)

# The module (``bioplaus.data.download`` the attribute is the re-exported function).
ds = importlib.import_module("bioplaus.data.download")


# ---------------------------------------------------------------- verification


@needs_debian_fashion
def test_debian_fashion_files_match_published_checksums():
    """Debian re-gzipped the files: their decompressed bytes match the published content MD5s."""
    for remote in DATASETS["fashion"].files:
        path = DEBIAN_FASHION / remote.filename
        assert verify_file(path, remote), remote.filename
        assert not verify_file(path, dataclasses.replace(remote, content_md5="0" * 32))


# ---------------------------------------------------------------- downloads


def _published_tiny(tmp_path: Path):
    """Tiny IDX files in a 'server' folder; returns {filename: (file:// url, md5, bytes)}."""
    server = tmp_path / "server"
    tiny_idx_files(server)
    return {p.name: (p.as_uri(), md5_of(p.read_bytes()), p.read_bytes()) for p in server.iterdir()}


def test_download_fetches_and_verifies_from_file_urls_and_skips_verified_files(tmp_path, monkeypatch):
    published = _published_tiny(tmp_path)
    # first URL of one file is dead: the mirror is used
    urls = {f: u for f, (u, _, _) in published.items()}
    urls["train-labels-idx1-ubyte.gz"] = ("file:///nonexistent/x.gz", urls["train-labels-idx1-ubyte.gz"])
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info(urls=urls, md5s={f: m for f, (_, m, _) in published.items()}))
    data_dir = tmp_path / "data"
    paths = download("tiny", data_dir, timeout=5)
    assert [p.name for p in paths] == [r.filename for r in DATASETS["tiny"].files]
    for path in paths:
        assert path.read_bytes() == published[path.name][2]
    assert sorted(os.listdir(data_dir / "tiny")) == sorted(published)  # no partial files left
    X, y = load_dataset("tiny", data_dir=data_dir)
    assert X.shape == (10, 1, 5, 5)

    calls = []
    real_urlopen = ds._urlopen
    monkeypatch.setattr(ds, "_urlopen", lambda url, timeout: calls.append(url) or real_urlopen(url, timeout))
    assert download("tiny", data_dir) == paths
    assert calls == []  # all present and verified: nothing fetched
    (data_dir / "tiny" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    download("tiny", data_dir)
    assert calls == [published["t10k-labels-idx1-ubyte.gz"][0]]  # only the damaged file
    assert (data_dir / "tiny" / "t10k-labels-idx1-ubyte.gz").read_bytes() == published["t10k-labels-idx1-ubyte.gz"][2]


def test_download_checksum_mismatch_removes_the_file_and_raises(tmp_path, monkeypatch):
    published = _published_tiny(tmp_path)
    md5s = {f: m for f, (_, m, _) in published.items()}
    md5s["train-images-idx3-ubyte.gz"] = "0" * 32
    monkeypatch.setitem(DATASETS, "tiny", tiny_idx_info(urls={f: u for f, (u, _, _) in published.items()}, md5s=md5s))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match="checksum mismatch") as caught:
        download("tiny", data_dir)
    assert "\n" not in str(caught.value) and "train-images-idx3-ubyte.gz" in str(caught.value)
    assert os.listdir(data_dir / "tiny") == []  # neither the file nor a partial copy


def test_download_offline_is_a_one_paragraph_dataset_error(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(ds, "_urlopen", offline)
    with pytest.raises(DatasetError) as caught:
        download("fashion", tmp_path / "data", timeout=1)
    message = str(caught.value)
    assert "\n" not in message and "offline" in message
    assert "fashion-mnist.s3-website" in message and "raw.githubusercontent.com" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert os.listdir(tmp_path / "data" / "fashion") == []
    assert download("digits", tmp_path / "data") == []


def _cifar_archive(tmp_path: Path, corrupt_member: str | None = None):
    """A tar.gz laid out like cifar-10-python.tar.gz; returns (archive path, {batch: md5})."""
    staging = tmp_path / "staging" / "cifar-10-batches-py"
    staging.mkdir(parents=True)
    md5s = {}
    for k, remote in enumerate(DATASETS["cifar10"].files):
        data, labels = random_cifar(2, seed=20 + k)
        blob = cifar_py2_pickle(data, labels)
        md5s[remote.filename] = md5_of(blob)
        if remote.filename == corrupt_member:
            blob = blob[:-10]
        (staging / remote.filename).write_bytes(blob)
    (staging / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}))
    archive = tmp_path / "server" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-py")
    return archive, md5s


def _cifar_info(archive: Path, md5s: dict[str, str]) -> DatasetInfo:
    info = DATASETS["cifar10"]
    return dataclasses.replace(
        info,
        split_sizes=(2,) * 6,
        files=tuple(dataclasses.replace(r, url=archive.as_uri(), md5=md5s[r.filename]) for r in info.files),
        archive=dataclasses.replace(info.archive, url=archive.as_uri(), md5=md5_of(archive.read_bytes()),
                                    size=archive.stat().st_size),
    )


def test_download_cifar10_extracts_verified_batches_and_deletes_the_archive(tmp_path, monkeypatch):
    archive, md5s = _cifar_archive(tmp_path)
    monkeypatch.setitem(DATASETS, "cifar10", _cifar_info(archive, md5s))
    data_dir = tmp_path / "data"
    paths = download("cifar10", data_dir)
    assert sorted(os.listdir(data_dir / "cifar10")) == sorted(md5s)  # archive removed, no partials
    assert all(md5_of(p.read_bytes()) == md5s[p.name] for p in paths)
    X, y = load_dataset("cifar10", data_dir=data_dir)
    assert X.shape == (12, 3, 32, 32)


def test_download_cifar10_member_checksum_mismatch_leaves_no_file(tmp_path, monkeypatch):
    archive, md5s = _cifar_archive(tmp_path, corrupt_member="data_batch_3")
    monkeypatch.setitem(DATASETS, "cifar10", _cifar_info(archive, md5s))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match="data_batch_3 .*does not match its published checksum"):
        download("cifar10", data_dir)
    assert "data_batch_3" not in os.listdir(data_dir / "cifar10")
    assert not any(name.startswith(".") for name in os.listdir(data_dir / "cifar10"))
