"""Fast checks without a model: the results store (atomic folders, no PHI, safe ids, attachments) and the
service's guards (token comparison, token sources, zip checks before extraction)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.app import results as store
from meddx.errors import ConfigError, InputError
from meddx.infer.prediction import Prediction
from meddx.io.image import Image
from meddx.service.security import UploadTooLarge, read_token, safe_extract, token_ok
from tests.service.helpers import zip_bytes


def _prediction(ct: bool = False, seg: bool = True) -> Prediction:
    rng = np.random.default_rng(0)
    arr = (rng.normal(40, 200, (6, 40, 48)) if ct else rng.random((6, 40, 48))).astype(np.float32)
    img = Image(arr, spatial_ndim=3, spacing=(2.5, 0.7, 0.7), modality="CT" if ct else "OT",
                source="/data/DOE_JANE_19610214/ct.nii.gz")
    mask = np.zeros(arr.shape, bool)
    mask[2:4, 10:20, 10:20] = True
    return Prediction(probabilities={"normal": 0.2, "lesion": 0.8}, label="lesion", probability=0.8, threshold=0.5,
                      image=img, display=np.clip(arr / max(float(arr.max()), 1), 0, 1), kind="segmenter",
                      positive_class="lesion", mask=mask if seg else None,
                      heatmap=None if seg else mask.astype(np.float32),
                      lesions=[{"n_px": 200, "volume_ml": 0.49, "extent_mm": (5.0, 7.0, 7.0), "mask": mask,
                                "centroid_px": (2.5, 14.5, 14.5)}],
                      details={"n_lesions": 1, "units": "ml", "note": "Jane Doe's scan"})


def test_save_list_load_and_the_viewer_arrays(tmp_path: Path) -> None:
    folder = store.save_result(tmp_path, None, _prediction(), "demo_seg", extra={"orthanc_study": "abc-123"},
                               model_version="v1")
    res = store.load_result(tmp_path, folder.name)
    assert res["label"] == "lesion" and res["orthanc_study"] == "abc-123" and res["model"]["version"] == "v1"
    assert res["lesions"][0]["volume_ml"] == 0.49 and "mask" not in res["lesions"][0]
    assert res["details"] == {"n_lesions": 1, "units": "ml"}  # free text dropped
    text = (folder / "result.json").read_text()
    assert "DOE" not in text and "19610214" not in text and "Jane" not in text
    v = res["view"]
    assert v["shape"] == [6, 40, 48] and v["overlay_kind"] == "mask" and v["dtype"] == "uint8"
    over = np.fromfile(folder / v["overlay"], np.uint8).reshape(v["shape"])
    assert over[2:4, 10:20, 10:20].min() == 255 and over.sum() == 255 * 200
    assert v["key_slices"][0] in (2, 3) and not (folder / v["key_images"][0]).exists()  # drawn when first asked
    key = store.study_file(tmp_path, folder.name, v["key_images"][0])
    assert key.read_bytes().startswith(b"\x89PNG") and store.study_file(tmp_path, folder.name, key.name) == key
    from PIL import Image as PILImage

    rgb = np.asarray(PILImage.open(key))
    k = v["key_slices"][0]
    inside, outside = rgb[10:20, 10:20], rgb[25:, 25:]
    assert (inside[..., 0].astype(int) - inside[..., 1]).min() > 40  # the mask burnt in red
    assert np.abs(outside[..., 0].astype(int) - outside[..., 1]).max() <= 1  # grey elsewhere
    assert k in (2, 3)
    with pytest.raises(InputError):
        store.study_file(tmp_path, folder.name, "key_999.png")  # not listed: not drawn
    assert [r["id"] for r in store.list_results(tmp_path)] == [folder.name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_ct_keeps_hounsfield_units_for_window_presets(tmp_path: Path) -> None:
    pred = _prediction(ct=True, seg=False)
    folder = store.save_result(tmp_path, "ct-1", pred, "m")
    v = store.load_result(tmp_path, "ct-1")["view"]
    assert v["dtype"] == "int16" and v["overlay_kind"] == "heatmap" and "soft tissue" in v["presets"]
    hu = np.fromfile(folder / "image.bin", "<i2").reshape(v["shape"])
    assert np.abs(hu - np.clip(np.round(pred.image.array), -1024, 3071)).max() <= 1


def test_big_volumes_are_downsampled_for_the_viewer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MAX_INPLANE", 24)
    v = store.load_result(tmp_path, store.save_result(tmp_path, "s", _prediction(), "m").name)["view"]
    assert v["shape"] == [6, 20, 24]


def test_replacing_a_study_and_attachments(tmp_path: Path) -> None:
    store.save_result(tmp_path, "s1", _prediction(), "m")
    store.save_result(tmp_path, "s1", _prediction(seg=False), "m")  # replaced whole, atomically
    assert store.load_result(tmp_path, "s1")["view"]["overlay_kind"] == "heatmap"
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "key.png").write_bytes(b"\x89PNGfake")
    (rep / "report.html").write_text('<img src="key.png"><img src="../x.png">')
    store.attach(tmp_path, "s1", "report.html", rep / "report.html")
    html = store.study_file(tmp_path, "s1", "report.html").read_text()
    assert 'src="data:image/png;base64,' in html and 'src="../x.png"' in html
    assert store.load_result(tmp_path, "s1")["attachments"] == ["report.html"]
    with pytest.raises(InputError):
        store.attach(tmp_path, "s1", "evil.sh", b"x")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 81, "a..b", "/abs"])
def test_study_ids_cannot_name_other_paths(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError):
        store.load_result(tmp_path, bad)
    with pytest.raises(InputError):
        store.study_file(tmp_path, bad, "result.json")


def test_study_file_allows_only_the_stores_own_names(tmp_path: Path) -> None:
    store.save_result(tmp_path, "s", _prediction(), "m")
    assert store.study_file(tmp_path, "s", "image.bin").is_file()
    for name in ("../s/result.json", "run.json", "key_1.png.sh", "report.pdf"):
        with pytest.raises(InputError):
            store.study_file(tmp_path, "s", name)


def test_failed_status_and_idempotency_lookup(tmp_path: Path) -> None:
    store.save_status(tmp_path, "f1", "failed", "m", extra={"orthanc_study": "o1"})
    assert store.load_result(tmp_path, "f1")["status"] == "failed"
    assert store.processed(tmp_path, "orthanc_study", "o1") == ["f1"]
    (tmp_path / "junk").mkdir()  # unreadable folders are skipped, not fatal
    assert [r["id"] for r in store.list_results(tmp_path)] == ["f1"]


def test_token_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = "s3cret-token-0123456789"
    assert token_ok(f"Bearer {t}", t)
    for h in (None, "", t, f"bearer {t}", f"Bearer {t}x", "Bearer ", f"Basic {t}"):
        assert not token_ok(h, t)
    f = tmp_path / "tok"
    f.write_text(t + "\n")
    assert read_token(str(f)) == t
    monkeypatch.setenv("MEDDX_TOKEN", t)
    assert read_token(None) == t
    monkeypatch.delenv("MEDDX_TOKEN")
    with pytest.raises(ConfigError, match="no bearer token"):
        read_token(None)
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(str(tmp_path / "missing"))


def _zip(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "u.zip"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("members,links,error", [
    ({"../../x.dcm": b"1"}, None, "'..'"),
    ({"a/../../x.dcm": b"1"}, None, "'..'"),
    ({"/etc/x.dcm": b"1"}, None, "absolute"),
    ({"C:/x.dcm": b"1"}, None, "absolute"),
    ({"a.dcm": b"1"}, {"l.dcm": "/etc/passwd"}, "symbolic link"),
])
def test_zip_members_refused_before_anything_is_written(tmp_path: Path, members: dict, links: dict | None,
                                                        error: str) -> None:
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=error):
        safe_extract(_zip(tmp_path, zip_bytes(members, links)), dest, max_bytes=10**6)
    assert not dest.exists()
    assert not (tmp_path.parent / "x.dcm").exists()


def test_zip_bombs_and_member_counts(tmp_path: Path) -> None:
    bomb = _zip(tmp_path, zip_bytes({"a.dcm": b"\0" * 3_000_000}))
    assert bomb.stat().st_size < 20_000
    with pytest.raises(UploadTooLarge, match="expands"):
        safe_extract(bomb, tmp_path / "o1", max_bytes=1_000_000)
    many = _zip(tmp_path, zip_bytes({f"{i}.dcm": b"1" for i in range(30)}))
    with pytest.raises(UploadTooLarge, match="members"):
        safe_extract(many, tmp_path / "o2", max_bytes=10**6, max_members=20)
    ok = safe_extract(many, tmp_path / "o3", max_bytes=10**6)
    assert sorted(p.name for p in ok.iterdir())[:2] == ["00000.dcm", "00001.dcm"]  # generated names only



def test_result_json_is_plain_json(tmp_path: Path) -> None:
    folder = store.save_result(tmp_path, "p", _prediction(), "m")
    json.loads((folder / "result.json").read_text())
