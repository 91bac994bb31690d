"""Sequence inputs: slice folders ordered by number, multi-frame DICOM cine, 4D NIfTI, sampling, padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.data.sequences import (
    list_slice_files, load_lgg_sequences, load_sequence, make_windows, pad_sequences, sample_frames,
    slice_number, stack_adjacent,
)
from meddx.errors import DataError, InputError


def require(path: Path) -> Path:
    """Skip unless this particular data path exists."""
    if not path.exists():
        pytest.skip(f"data {path} is absent")
    return path


def test_slice_number_uses_last_integer() -> None:
    assert slice_number("TCGA_CS_4941_19960909_10.tif") == 10
    assert slice_number("TCGA_CS_4941_19960909_10_mask.tif") == 10
    assert slice_number("img_2.png") == 2
    with pytest.raises(InputError):
        slice_number("nodigits.png")


def _write_slices(folder: Path, n: int) -> None:
    from PIL import Image as PILImage

    folder.mkdir()
    for i in range(1, n + 1):  # value encodes the slice number so order is checkable
        PILImage.fromarray(np.full((8, 8), i * 10, np.uint8)).save(folder / f"P_2001_{i}.png")
        m = np.zeros((8, 8), np.uint8)
        m[2:4, 2:4] = 255 if i in (3, 4) else 0
        PILImage.fromarray(m).save(folder / f"P_2001_{i}_mask.png")


def test_slice_folder_numeric_order_and_masks(tmp_path: Path) -> None:
    _write_slices(tmp_path / "p", 12)  # lexical order would put 10, 11, 12 before 2
    entries = list_slice_files(tmp_path / "p")
    assert [e[0] for e in entries] == list(range(1, 13))
    seq = load_sequence(tmp_path / "p", normalise=False)
    assert seq.frames.shape == (12, 8, 8)
    assert seq.frames[:, 0, 0].tolist() == [i * 10 for i in range(1, 13)]
    assert seq.masks is not None and seq.masks.any(axis=(1, 2)).tolist() == [i in (3, 4) for i in range(1, 13)]
    sub = load_sequence(tmp_path / "p", mode="uniform", length=4, size=16)
    assert sub.frames.shape == (4, 16, 16) and sub.numbers.tolist() == [2, 5, 8, 11]
    assert sub.frames.max() <= 1.0


def test_sample_frames() -> None:
    assert sample_frames(10, mode="all").tolist() == list(range(10))
    idx = sample_frames(30, 8, "uniform")
    assert len(idx) == 8 and np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] <= 29
    assert sample_frames(3, 6, "uniform").tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        sample_frames(5, 3, "random")


def test_pad_sequences_mask_and_truncation() -> None:
    a, b = np.ones((3, 4, 4)), np.full((6, 4, 4), 2.0)
    X, mask = pad_sequences([a, b], length=5)
    assert X.shape == (2, 5, 4, 4) and mask.dtype == bool
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert np.all(X[0, 3:] == 0) and np.all(X[0, :3] == 1) and np.all(X[1] == 2)
    X2, m2 = pad_sequences([a, b])
    assert X2.shape[1] == 6 and m2.sum() == 9
    with pytest.raises(ValueError):
        pad_sequences([np.ones((2, 4, 4)), np.ones((2, 5, 5))])


def test_multiframe_dicom_cine_loads_as_sequence() -> None:
    deid_data = pytest.importorskip("deid_data")
    path = require(Path(deid_data.__file__).parent / "data" / "ultrasounds" / "ultrasound-multiframe.dcm")
    import pydicom

    ds = pydicom.dcmread(path)
    seq = load_sequence(path, normalise=False)
    assert seq.n_frames == int(ds.NumberOfFrames) == 30
    assert seq.frames.shape[1:3] == (int(ds.Rows), int(ds.Columns))
    ref = ds.pixel_array  # frame order as stored
    for t in (0, 7, 29):
        assert np.array_equal(seq.frames[t], ref[t])
    assert seq.frame_time_ms == pytest.approx(float(ds.FrameTime))
    small = load_sequence(path, mode="uniform", length=10, size=32)
    assert small.frames.shape == (10, 32, 32, 3) and 0.0 <= small.frames.min() and small.frames.max() <= 1.0


def test_4d_nifti_written_in_tmp_path(tmp_path: Path) -> None:
    import nibabel as nib

    data = np.zeros((6, 5, 4, 7), np.float32)  # x, y, z, t
    for t in range(7):
        data[..., t] = t + 1
    data[1, 2, 3, :] += np.arange(7) * 0.1
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "cine4d.nii.gz")
    seq = load_sequence(tmp_path / "cine4d.nii.gz", normalise=False)
    assert seq.n_frames == 7 and seq.frames.shape == (7, 4, 5, 6)  # (t, z, y, x)
    assert [float(seq.frames[t, 0, 0, 0]) for t in range(7)] == [float(t + 1) for t in range(7)]
    assert np.allclose(seq.frames[:, 3, 2, 1], data[1, 2, 3, :])


def test_reference_4d_nifti(shared_data: Path) -> None:
    import nibabel as nib

    path = require(shared_data / "dicom" / "ref_dcm2niix_series4.nii")
    seq = load_sequence(path, normalise=False)
    ref = np.asanyarray(nib.load(path).dataobj)
    assert ref.shape == (64, 64, 15, 10) and seq.n_frames == 10
    for t in (0, 4, 9):
        assert np.allclose(seq.frames[t], ref[..., t].transpose(2, 1, 0))


def test_lgg_root_comes_from_the_caller_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDDX_LGG_ROOT", raising=False)
    with pytest.raises(DataError, match="no LGG data folder given.*MEDDX_LGG_ROOT"):
        load_lgg_sequences()
    monkeypatch.setenv("MEDDX_LGG_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere: LGG data folder not found"):
        load_lgg_sequences()
    with pytest.raises(DataError, match="elsewhere: LGG data folder not found"):  # the caller's root wins
        load_lgg_sequences(tmp_path / "elsewhere")


def test_load_lgg_sequences(shared_data: Path) -> None:
    root = require(shared_data / "lgg")
    lgg = load_lgg_sequences(root, size=32)
    assert len(lgg["patient_ids"]) == 10 and sum(len(y) for y in lgg["labels"]) == 218
    f, y, m = lgg["frames"][0], lgg["labels"][0], lgg["masks"][0]
    assert f.shape == (len(y), 32, 32, 3) and f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    assert lgg["numbers"][0].tolist() == list(range(1, len(y) + 1))
    # labels come from the full-resolution masks; the resized masks agree where they are non-empty
    assert set(np.unique(y)) == {0, 1} and np.all(y[m.any(axis=(1, 2)).astype(bool)] == 1)
    # the lesion is one contiguous run in the first patient (slices 11-18 of TCGA_CS_4941)
    assert "".join(map(str, y)) == "00000000001111111100000"


def test_make_windows_and_stack_adjacent() -> None:
    seqs = [np.arange(8)[:, None, None] * np.ones((8, 2, 2)), np.zeros((3, 2, 2))]
    labs = [np.array([0, 0, 0, 1, 1, 0, 0, 0]), np.zeros(3, int)]
    w = make_windows(seqs, labs, window=4, stride=2, groups=["a", "b"])
    assert w["X"].shape == (3, 4, 2, 2) and w["y"].tolist() == [1, 1, 1] and w["starts"].tolist() == [0, 2, 4]
    assert list(w["groups"]) == ["a", "a", "a"]
    s = stack_adjacent(seqs[0], context=1)
    assert s.shape == (8, 2, 2, 3)
    assert s[0, 0, 0].tolist() == [0, 0, 1] and s[5, 0, 0].tolist() == [4, 5, 6] and s[7, 0, 0].tolist() == [6, 7, 7]


def test_normalise_stack_is_per_stack_and_scale_free() -> None:
    from meddx.data.sequences import normalise_stack

    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 0.6, size=(4, 8, 8, 3)).astype("float32")
    a[:, :2] = 0.0  # background
    z = normalise_stack(a)
    assert z.shape == a.shape and np.isfinite(z).all()
    fg = a[..., 1] > 0.05
    assert abs(float(np.median(z[..., 1][fg]))) < 1e-5 and abs(float(z[..., 1][fg].std()) - 1) < 1e-4
    np.testing.assert_allclose(normalise_stack(a * 1.5 + 0.0), z, atol=1e-4)  # same scan at another gain
    assert normalise_stack(a[..., 0]).shape == (4, 8, 8)
