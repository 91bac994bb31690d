"""MedMNIST downloader: table against the real trainval files, MD5 check and failures, no network."""

from __future__ import annotations

import hashlib
import io
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from meddx.data import medmnist
from meddx.data.medmnist import MEDMNIST_INFO, download_medmnist, md5sum, medmnist_info
from meddx.errors import ConfigError, NetworkError

FLAGS = ["pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
         "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist", "organmnist3d",
         "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d"]


def test_table_has_all_flags_with_zenodo_url_and_md5():
    assert set(FLAGS) <= set(MEDMNIST_INFO)
    for flag in FLAGS:
        info = MEDMNIST_INFO[flag]
        assert info["url"] == f"https://zenodo.org/records/10519652/files/{flag}.npz?download=1"
        assert re.fullmatch(r"[0-9a-f]{32}", info["md5"]), flag
        assert len(info["labels"]) >= 2
    # values as published in MedMNIST's info.py
    assert MEDMNIST_INFO["breastmnist"]["md5"] == "750601b1f35ba3300ea97c75c52ff8f6"
    assert MEDMNIST_INFO["adrenalmnist3d"]["md5"] == "bbd3c5a5576322bc4cdfea780653b1ce"
    assert len({MEDMNIST_INFO[f]["md5"] for f in FLAGS}) == len(FLAGS)


def test_unknown_flag_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown MedMNIST dataset 'nosuchmnist'"):
        medmnist_info("nosuchmnist")


@pytest.mark.parametrize("flag", ["breastmnist", "adrenalmnist3d"])
def test_table_matches_real_trainval_files(shared_data, flag):
    path = shared_data / "medmnist" / f"{flag}_trainval.npz"
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    info = MEDMNIST_INFO[flag]
    with np.load(path, allow_pickle=False) as d:
        for split in ("train", "val"):
            images, labels = d[f"{split}_images"], d[f"{split}_labels"]
            assert images.shape[0] == labels.shape[0] == info["n_samples"][split]
            assert int(labels.max()) < len(info["labels"])
        spatial = 3 if flag.endswith("3d") else 2
        assert d["train_images"].ndim == 1 + spatial + (info["n_channels"] == 3)
        assert d["train_images"].shape[1] == 28


def _payload(tmp_path: Path) -> tuple[Path, bytes, str]:
    data = b"PK-not-really-a-zip-" * 5000
    src = tmp_path / "src" / "breastmnist.npz"
    src.parent.mkdir()
    src.write_bytes(data)
    return src, data, hashlib.md5(data).hexdigest()


def test_download_from_file_url_verifies_md5(tmp_path):
    src, data, digest = _payload(tmp_path)
    out = download_medmnist("breastmnist", tmp_path / "root", url=src.as_uri(), md5=digest, progress=False)
    assert out == tmp_path / "root" / "breastmnist.npz"
    assert out.read_bytes() == data
    assert md5sum(out) == digest
    assert [p.name for p in out.parent.iterdir()] == ["breastmnist.npz"]  # no temp file left


def test_md5_mismatch_deletes_and_names_both_hashes(tmp_path):
    src, _, digest = _payload(tmp_path)
    wrong = "0" * 32
    with pytest.raises(NetworkError) as err:
        download_medmnist("breastmnist", tmp_path / "root", url=src.as_uri(), md5=wrong, progress=False)
    msg = str(err.value)
    assert "breastmnist.npz" in msg and wrong in msg and digest in msg and "\n" not in msg
    assert list((tmp_path / "root").iterdir()) == []


def test_existing_file_with_right_md5_is_not_downloaded(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    data = b"already here"
    (root / "breastmnist.npz").write_bytes(data)

    def no_network(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(medmnist.urllib.request, "urlopen", no_network)
    out = download_medmnist("breastmnist", root, md5=hashlib.md5(data).hexdigest(), url="http://127.0.0.1:9/x")
    assert out.read_bytes() == data
    # with the table's MD5 the same file is wrong -> re-download attempted (and fails offline here)
    with pytest.raises(AssertionError, match="must not download"):
        download_medmnist("breastmnist", root, progress=False)


def test_force_redownloads_even_when_md5_matches(tmp_path):
    src, data, digest = _payload(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / "breastmnist.npz").write_bytes(data)
    src.write_bytes(data)  # same content: force path still goes through the download
    calls = []

    def opener(req, timeout):
        calls.append(req)
        return io.BufferedReader(io.BytesIO(data))  # has read(); no headers attribute

    out = download_medmnist("breastmnist", root, force=True, url="http://example.invalid/b.npz", md5=digest,
                            progress=False, opener=opener)
    assert calls and out.read_bytes() == data


def test_offline_connection_refused_is_one_clear_line(tmp_path):
    url = "http://127.0.0.1:9/breastmnist.npz"
    with pytest.raises(NetworkError) as err:
        download_medmnist("breastmnist", tmp_path / "root", url=url, md5="0" * 32, timeout=5, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"could not download breastmnist from {url}: ")
    assert "check your network or download it by hand to" in msg
    assert str(tmp_path / "root" / "breastmnist.npz") in msg
    assert "\n" not in msg
    assert not (tmp_path / "root" / "breastmnist.npz").exists()
    assert list((tmp_path / "root").iterdir()) == []


def test_offline_failure_with_table_url_monkeypatched(tmp_path, monkeypatch):
    def refuse(req, timeout):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(medmnist.urllib.request, "urlopen", refuse)
    with pytest.raises(NetworkError, match=r"could not download breastmnist from https://zenodo\.org/records/"
                                           r"10519652/files/breastmnist\.npz\?download=1: Connection refused; "):
        download_medmnist("breastmnist", tmp_path, progress=False)


def test_http_error_and_timeout(tmp_path):
    def http404(req, timeout):
        raise urllib.error.HTTPError(req.full_url, 404, "Not Found", {}, None)

    with pytest.raises(NetworkError, match="HTTP 404 Not Found"):
        download_medmnist("pathmnist", tmp_path, progress=False, opener=http404)

    def slow(req, timeout):
        raise TimeoutError("read timed out")

    with pytest.raises(NetworkError, match="could not download pathmnist .*timed out"):
        download_medmnist("pathmnist", tmp_path, progress=False, opener=slow)
    assert list(tmp_path.iterdir()) == []
