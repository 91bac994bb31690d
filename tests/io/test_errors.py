"""Every user mistake -> one-line InputError naming the path, never a library traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from meddx.errors import InputError
from meddx.io import read_image


def _ct_small() -> str:
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom test data not installed")
    return str(path)


def _raises(path: Path, match: str, **kw) -> InputError:
    with pytest.raises(InputError, match=match) as err:
        read_image(path, **kw)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    assert err.value.path == str(path)
    return err.value


def test_nonexistent_path(tmp_path: Path) -> None:
    _raises(tmp_path / "missing.dcm", "no such file")


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    _raises(folder, "folder contains no readable images")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("hello")
    _raises(tmp_path, "folder contains no readable images")


def test_text_file_named_dcm(tmp_path: Path) -> None:
    f = tmp_path / "fake.dcm"
    f.write_text("this is a text file, not an image\n" * 20)
    _raises(f, "not a DICOM file")


def test_truncated_dicom(tmp_path: Path) -> None:
    data = Path(_ct_small()).read_bytes()
    f = tmp_path / "half.dcm"
    f.write_bytes(data[: len(data) // 2])
    _raises(f, "truncated DICOM")


def test_truncated_dicom_inside_series(tmp_path: Path) -> None:
    ct = pydicom.dcmread(_ct_small())
    for k in range(3):
        ct.SOPInstanceUID = pydicom.uid.generate_uid()
        ct.ImagePositionPatient = [0.0, 0.0, float(k)]
        ct.save_as(tmp_path / f"s{k}.dcm")
    data = (tmp_path / "s1.dcm").read_bytes()
    (tmp_path / "s1.dcm").write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError, match="truncated DICOM") as err:
        read_image(tmp_path)
    assert "s1.dcm" in str(err.value)


def test_unsupported_extension(tmp_path: Path) -> None:
    f = tmp_path / "table.xyz"
    f.write_text("a,b\n1,2\n")
    _raises(f, "unsupported file type '.xyz'")


def test_no_extension_unknown_content(tmp_path: Path) -> None:
    f = tmp_path / "image_12"
    f.write_text("plain text")
    _raises(f, "unsupported file")


def test_nan_values(tmp_path: Path) -> None:
    arr = np.zeros((4, 5, 6), dtype=np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    f = tmp_path / "nan.npy"
    np.save(f, arr)
    _raises(f, "image contains 3 NaN values and 1 infinite values")
    assert np.isnan(read_image(f, allow_nan=True).array).sum() == 3


def test_nan_values_in_nifti(tmp_path: Path) -> None:
    import nibabel as nib

    arr = np.ones((4, 5, 6), dtype=np.float32)
    arr[2, 2, 2] = np.nan
    f = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(f))
    _raises(f, "image contains 1 NaN values")


def test_inconsistent_series_sizes(tmp_path: Path) -> None:
    ct = pydicom.dcmread(_ct_small())
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ct.save_as(tmp_path / "a.dcm")
    mr.SeriesInstanceUID = ct.SeriesInstanceUID  # same series, different slice size
    mr.ImageOrientationPatient = ct.ImageOrientationPatient
    mr.ImagePositionPatient = [0.0, 0.0, 99.0]
    mr.save_as(tmp_path / "b.dcm")
    _raises(tmp_path, "inconsistent series: slices have different sizes")


def test_unknown_series_uid(tmp_path: Path) -> None:
    pydicom.dcmread(_ct_small()).save_as(tmp_path / "a.dcm")
    _raises(tmp_path, "series 1.2.3 not found", series_uid="1.2.3")


def test_huge_image_refused_before_decoding(tmp_path: Path, shared_data: Path) -> None:
    _raises(Path(_ct_small()), "image too large", max_voxels=1000)
    folder = shared_data / "dicom" / "ct_abdomen_ircadb"
    if folder.is_dir():
        _raises(folder, "image too large", max_voxels=10**6)


def test_huge_raster_and_gif_keep_their_own_message(tmp_path: Path) -> None:
    """The size check's InputError (a ValueError too) is not re-wrapped as "cannot read ...: <path>: ..."."""
    from PIL import Image as PILImage

    png = tmp_path / "big.png"
    PILImage.fromarray(np.zeros((40, 40), np.uint8)).save(png)
    err = _raises(png, "image too large", max_voxels=100)
    assert "cannot read" not in str(err) and str(err).count(str(png)) == 1
    gif = tmp_path / "big.gif"
    frames = [PILImage.fromarray(np.full((20, 20), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50)
    err = _raises(gif, "too large", max_voxels=2000)
    assert "cannot read" not in str(err) and str(err).count(str(gif)) == 1


def test_corrupt_png_and_nifti(tmp_path: Path) -> None:
    png = tmp_path / "broken.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _raises(png, "image")
    nii = tmp_path / "broken.nii.gz"
    nii.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 50)
    _raises(nii, "NIfTI")


def test_corrupt_video(tmp_path: Path) -> None:
    f = tmp_path / "broken.mp4"
    f.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    _raises(f, "video")


def test_dicom_without_pixels(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_ct_small())
    del ds.PixelData
    f = tmp_path / "nopix.dcm"
    ds.save_as(f)
    _raises(f, "no pixel data")
