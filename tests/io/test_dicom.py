"""DICOM reading: real series (CT, 4D fMRI oracle), pydicom/deid-data test files, multi-frame."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from meddx.io import read_image

from tests.conftest import require  # noqa: E402  (importlib mode: tests is a package root)


def _pydicom_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return str(path)


def _deid_file(*parts: str) -> Path:
    deid_data = pytest.importorskip("deid_data")
    return require(Path(deid_data.__file__).parent / "data" / Path(*parts))


# -- oracle: 4D fMRI vs the NIfTI written by dcm2niix ----------------------------------------

def test_fmri_4d_matches_dcm2niix_voxel_for_voxel(shared_data: Path) -> None:
    folder = require(shared_data / "dicom" / "mr_fmri_ge")
    ref = nib.load(str(require(shared_data / "dicom" / "ref_dcm2niix_series4.nii")))
    image = read_image(folder)
    assert image.is_sequence and image.spatial_ndim == 3
    assert image.array.shape == (10, 15, 64, 64)
    assert image.spacing == pytest.approx((5.0, 3.75, 3.75))  # 5 mm from positions, not SliceThickness 3
    assert image.metadata["SliceThickness"] == 3.0
    assert image.metadata["files_skipped"] == ["README-Series.txt"]
    assert image.modality == "MR"

    ours_aff = image.affine_ras_xyz()
    data_xyzt = image.array.transpose(3, 2, 1, 0)
    transform = nib.orientations.ornt_transform(nib.io_orientation(ours_aff), nib.io_orientation(ref.affine))
    reoriented = nib.orientations.apply_orientation(data_xyzt, transform)
    aff = ours_aff @ nib.orientations.inv_ornt_aff(transform, data_xyzt.shape[:3])
    ref_data = np.asanyarray(ref.dataobj)
    assert reoriented.shape == ref_data.shape
    np.testing.assert_array_equal(reoriented, ref_data)
    np.testing.assert_allclose(aff, ref.affine, atol=1e-3)
    refs = image.metadata["dicom_refs"]
    assert len(refs["SOPInstanceUIDs"]) == 10 and all(len(t) == 15 for t in refs["SOPInstanceUIDs"])


def test_fmri_time_order_follows_instance_number(shared_data: Path) -> None:
    folder = require(shared_data / "dicom" / "mr_fmri_ge")
    image = read_image(folder)
    sops = image.metadata["dicom_refs"]["SOPInstanceUIDs"]
    by_sop = {}
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_sop[str(ds.SOPInstanceUID)] = (int(ds.InstanceNumber), float(ds.ImagePositionPatient[2]))
    # same slice across time: increasing InstanceNumber; same time across z: increasing S position
    inst = np.array([[by_sop[u][0] for u in row] for row in sops])
    zpos = np.array([[by_sop[u][1] for u in row] for row in sops])
    assert np.all(np.diff(inst, axis=0) > 0)
    assert np.all(np.diff(zpos, axis=1) > 0)


# -- real CT series ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct_image(shared_data: Path):
    return read_image(require(shared_data / "dicom" / "ct_abdomen_ircadb"))


def test_ct_series_geometry_and_hu(ct_image, shared_data: Path) -> None:
    image = ct_image
    assert image.array.shape == (129, 512, 512)
    assert image.array.dtype == np.float32
    assert image.modality == "CT" and image.has_geometry and not image.is_sequence
    assert image.spacing == pytest.approx((1.6, 0.57, 0.57), abs=1e-4)
    assert float(image.array.min()) <= -1000  # air outside the body
    soft = np.count_nonzero((image.array > 0) & (image.array < 100))
    assert soft > 1_000_000  # plenty of soft tissue
    refs = image.metadata["dicom_refs"]
    assert len(refs["SOPInstanceUIDs"]) == 129 and len(set(refs["SOPInstanceUIDs"])) == 129
    # slices in anatomical order: positions strictly monotone along the normal, matching the array
    folder = shared_data / "dicom" / "ct_abdomen_ircadb"
    pos = {}
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        pos[str(ds.SOPInstanceUID)] = np.asarray(ds.ImagePositionPatient, dtype=float)
    normal = image.direction[:, 0]
    proj = np.array([pos[u] @ normal for u in refs["SOPInstanceUIDs"]])
    assert np.all(np.diff(proj) > 0)
    np.testing.assert_allclose(np.diff(proj), 1.6, atol=1e-3)
    np.testing.assert_allclose(image.origin, pos[refs["SOPInstanceUIDs"][0]], atol=1e-4)


def test_ct_series_matches_slice_read_individually(ct_image, shared_data: Path) -> None:
    folder = shared_data / "dicom" / "ct_abdomen_ircadb"
    sop = ct_image.metadata["dicom_refs"]["SOPInstanceUIDs"][40]
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        if ds.SOPInstanceUID == sop:
            expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            np.testing.assert_array_equal(ct_image.array[40], expected.astype(np.float32))
            single = read_image(f)
            assert single.spatial_ndim == 2 and single.has_geometry
            np.testing.assert_array_equal(single.array, ct_image.array[40])
            return
    pytest.fail("SOPInstanceUID not found")


def test_multiple_series_folder_picks_largest_and_reports(tmp_path: Path) -> None:
    ct = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    mr = pydicom.dcmread(_pydicom_file("MR_small.dcm"))
    folder = tmp_path / "study"
    folder.mkdir()
    for k in range(4):  # 4-slice CT series, written in reverse name order
        ds = copy.deepcopy(ct)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ipp = [float(v) for v in ct.ImagePositionPatient]
        ipp[2] += 2.5 * k
        ds.ImagePositionPatient = ipp
        ds.save_as(folder / f"ct_{9 - k}.dcm")
    mr.save_as(folder / "mr.dcm")
    (folder / "notes.txt").write_text("not an image")
    image = read_image(folder)
    assert image.array.shape == (4, 128, 128)
    assert image.spacing[0] == pytest.approx(2.5)
    assert image.metadata["series_chosen"] == str(ct.SeriesInstanceUID)
    skipped = image.metadata["series_skipped"]
    assert skipped == [{"uid": str(mr.SeriesInstanceUID), "n_files": 1}]  # no free-text description (PHI)
    assert image.metadata["files_skipped"] == ["notes.txt"]
    other = read_image(folder, series_uid=str(mr.SeriesInstanceUID))
    assert other.modality == "MR" and other.array.shape == (64, 64)


# -- pydicom test files: compression, colour, multi-frame ------------------------------------

@pytest.mark.parametrize("compressed, reference", [
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm"),
])
def test_compressed_transfer_syntaxes_decode_losslessly(compressed: str, reference: str) -> None:
    a = read_image(_pydicom_file(compressed))
    b = read_image(_pydicom_file(reference))
    np.testing.assert_array_equal(a.array, b.array)
    assert a.metadata["TransferSyntax"] != b.metadata["TransferSyntax"]


def test_jpeg_baseline_ybr_becomes_rgb() -> None:
    lossy = read_image(_pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))  # YBR_FULL, JPEG baseline
    exact = read_image(_pydicom_file("SC_rgb_rle.dcm"))         # same picture, RGB lossless
    assert lossy.has_channels and lossy.array.shape == (100, 100, 3)
    assert lossy.metadata.get("converted_to_rgb") is True
    diff = np.abs(lossy.array.astype(int) - exact.array.astype(int))
    assert diff.mean() < 5  # lossy, but colours right (a YBR/RGB mix-up gives errors of ~100)


def test_jpeg2000_and_jpegls_16bit() -> None:
    j2k = read_image(_pydicom_file("JPEG2000.dcm"))
    assert j2k.array.shape == (1024, 256) and j2k.modality == "NM"
    jls = read_image(_pydicom_file("JPEGLSNearLossless_16.dcm"))
    assert jls.array.shape == (50, 10) and jls.array.max() > 255


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_pydicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    mono2 = read_image(_pydicom_file("MR_small.dcm")).array.astype(np.int64)
    mono1 = read_image(path)
    assert mono1.metadata["monochrome1_inverted"] is True
    np.testing.assert_array_equal(mono1.array.astype(np.int64), -1 - mono2)  # signed 16-bit: v -> -1 - v


def test_ct_small_hu_and_2d_geometry() -> None:
    path = _pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert image.array.dtype == np.float32 and image.spatial_ndim == 2
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(image.array, expected)
    assert image.has_geometry
    np.testing.assert_allclose(image.origin, [float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(image.direction[:, 1], [float(v) for v in ds.ImageOrientationPatient[:3]])
    np.testing.assert_allclose(image.spacing, [float(v) for v in ds.PixelSpacing])


def test_rtdose_multiframe_grid_is_a_volume() -> None:
    path = _pydicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert image.spatial_ndim == 3 and not image.is_sequence and image.array.shape == (15, 10, 10)
    offsets = np.asarray(ds.GridFrameOffsetVector, dtype=float)
    assert image.spacing[0] == pytest.approx(abs(np.median(np.diff(offsets))))
    expected = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    order = np.argsort(offsets)
    np.testing.assert_allclose(image.array, expected[order], rtol=1e-6)


def test_cine_multiframe_ybr_sequence() -> None:
    image = read_image(_pydicom_file("examples_ybr_color.dcm"))
    assert image.is_sequence and image.has_channels and image.array.shape == (30, 240, 320, 3)
    assert image.modality == "US"
    assert image.metadata["dicom_refs"]["ReferencedFrameNumbers"] == list(range(1, 31))


def test_enhanced_multiframe_with_per_frame_positions(tmp_path: Path) -> None:
    """Build an enhanced-style object from CT_small: frames stored out of order, positions per frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    base = ds.pixel_array
    z_order = [2, 0, 3, 1]
    frames = np.stack([base + 100 * z for z in z_order]).astype(np.int16)
    ds.NumberOfFrames = len(z_order)
    ds.PixelData = frames.tobytes()
    ipp0 = np.asarray(ds.ImagePositionPatient, dtype=float)
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = list(ds.ImageOrientationPatient)
    shared.PlaneOrientationSequence = Sequence([ori])
    meas = Dataset()
    meas.PixelSpacing = list(ds.PixelSpacing)
    meas.SliceThickness = 9.0
    shared.PixelMeasuresSequence = Sequence([meas])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for z in z_order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = list(ipp0 + np.array([0.0, 0.0, 3.0 * z]))
        item.PlanePositionSequence = Sequence([pos])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    del ds.ImagePositionPatient
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path)
    image = read_image(path)
    assert image.spatial_ndim == 3 and image.array.shape == (4, 128, 128)
    assert image.spacing[0] == pytest.approx(3.0)
    slope, inter = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    for z in range(4):
        np.testing.assert_allclose(image.array[z], (base + 100 * z) * slope + inter)
    assert image.metadata["dicom_refs"]["ReferencedFrameNumbers"] == [2, 4, 1, 3]


def test_deid_data_ultrasound_cine_sequence() -> None:
    path = _deid_file("ultrasounds", "ultrasound-multiframe.dcm")
    n_frames = int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
    image = read_image(path)
    assert image.is_sequence and image.has_channels
    assert image.n_frames == n_frames == 30
    assert image.array.shape == (30, 600, 800, 3)


def test_deid_data_rgb_and_ybr_ct() -> None:
    rgb = read_image(_deid_file("ultrasounds", "RGB_IMAGE.dcm"))
    assert rgb.array.shape == (768, 1024, 3) and rgb.has_channels
    ct = read_image(_deid_file("humans", "ctbrain1.dcm"))  # YBR_FULL_422 JPEG
    assert ct.has_channels and ct.array.shape == (456, 510, 3) and ct.modality == "CT"
