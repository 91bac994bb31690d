"""Non-DICOM formats: NIfTI vs NRRD copies, rasters, video/GIF, npz, and the NIfTI writer."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from meddx.errors import DataError, InputError
from meddx.io import Image, read_image
from meddx.io.npz import load_npz_arrays
from meddx.io.video import read_frames
from meddx.io.writers import write_nifti

from tests.conftest import require


@pytest.mark.parametrize("name", ["brain1_image", "brain1_label", "brain2_image", "brain2_label",
                                  "breast1_image", "breast1_label"])
def test_nifti_and_nrrd_copies_are_identical(shared_data: Path, name: str) -> None:
    nii = read_image(require(shared_data / "nifti" / "nifti" / f"{name}.nii.gz"))
    nrrd = read_image(require(shared_data / "nifti" / "nrrd" / f"{name}.nrrd"))
    assert nii.array.shape == nrrd.array.shape and nii.spatial_ndim == 3
    np.testing.assert_array_equal(nii.array, nrrd.array)
    assert nii.spacing == nrrd.spacing
    np.testing.assert_allclose(nii.origin, nrrd.origin, atol=1e-3)
    np.testing.assert_allclose(nii.direction, nrrd.direction, atol=1e-6)
    assert nii.orientation_code() == nrrd.orientation_code()


def test_label_voxel_counts(shared_data: Path) -> None:
    counts = {"brain1": 4137, "brain2": 453, "breast1": 143}
    for name, n in counts.items():
        label = read_image(require(shared_data / "nifti" / "nifti" / f"{name}_label.nii.gz"))
        assert int(np.count_nonzero(label.array)) == n


def test_nifti_4d_is_sequence(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6 * 3, dtype=np.int16).reshape(4, 5, 6, 3)  # x, y, z, t
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "v.nii.gz"))
    image = read_image(tmp_path / "v.nii.gz")
    assert image.is_sequence and image.array.shape == (3, 6, 5, 4)
    assert image.spacing == (4.0, 3.0, 2.0)
    assert image.array[1, 2, 3, 0] == data[0, 3, 2, 1]


def test_write_nifti_round_trip(shared_data: Path, tmp_path: Path) -> None:
    src = read_image(require(shared_data / "nifti" / "nrrd" / "breast1_image.nrrd"))
    out = write_nifti(src, tmp_path / "copy.nii.gz")
    back = read_image(out)
    np.testing.assert_array_equal(back.array, src.array)
    assert back.spacing == pytest.approx(src.spacing, abs=1e-5)
    np.testing.assert_allclose(back.origin, src.origin, atol=1e-3)
    np.testing.assert_allclose(back.direction, src.direction, atol=1e-6)
    # an array (e.g. a mask) on the grid of `like`
    mask = src.array > np.percentile(src.array, 99)
    back_mask = read_image(write_nifti(mask, tmp_path / "mask.nii", like=src))
    np.testing.assert_array_equal(back_mask.array.astype(bool), mask)
    np.testing.assert_allclose(back_mask.affine_lps(), src.affine_lps(), atol=1e-3)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_write_nifti_dicom_4d_round_trip(shared_data: Path, tmp_path: Path) -> None:
    src = read_image(require(shared_data / "dicom" / "mr_fmri_ge"))
    back = read_image(write_nifti(src, tmp_path / "fmri.nii.gz"))
    assert back.is_sequence
    np.testing.assert_array_equal(back.array, src.array)
    np.testing.assert_allclose(back.affine_lps(), src.affine_lps(), atol=1e-3)


def test_write_nifti_rejects_wrong_shape(tmp_path: Path) -> None:
    like = Image(np.zeros((3, 4, 5)), spatial_ndim=3)
    with pytest.raises(InputError, match="does not match"):
        write_nifti(np.zeros((2, 2, 2)), tmp_path / "bad.nii.gz", like=like)
    assert not (tmp_path / "bad.nii.gz").exists()


# -- rasters --------------------------------------------------------------------------------

def test_png_modes(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    gray = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    PILImage.fromarray(gray).save(tmp_path / "g.png")
    im = read_image(tmp_path / "g.png")
    assert im.array.shape == (20, 30) and not im.has_channels
    np.testing.assert_array_equal(im.array, gray)

    deep = (np.arange(20 * 30) * 97 % 65536).astype(np.uint16).reshape(20, 30)
    PILImage.fromarray(deep).save(tmp_path / "d.png")
    im16 = read_image(tmp_path / "d.png")
    assert im16.array.dtype == np.uint16 and im16.array.max() > 255
    np.testing.assert_array_equal(im16.array, deep)

    rgba = np.zeros((8, 9, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 50
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    imc = read_image(tmp_path / "a.png")
    assert imc.has_channels and imc.array.shape == (8, 9, 3) and imc.array[0, 0, 0] == 200


def test_lgg_three_channel_tif_and_mednist_jpeg(shared_data: Path) -> None:
    lgg = require(shared_data / "lgg")
    tif = next(p for p in sorted(lgg.rglob("*_1.tif")) if not p.name.endswith("_mask.tif"))
    im = read_image(tif)
    assert im.array.shape == (256, 256, 3) and im.has_channels
    mednist = require(shared_data / "mednist")
    jpg = sorted((mednist / "Hand").glob("*.jpeg"))[0]
    im2 = read_image(jpg)
    assert im2.array.shape == (64, 64) and im2.array.dtype == np.uint8


def test_dicom_without_extension_is_sniffed(shared_data: Path) -> None:
    f = require(shared_data / "dicom" / "ct_abdomen_ircadb" / "image_12")
    im = read_image(f)
    assert im.modality == "CT" and im.array.shape == (512, 512)


# -- video / GIF ------------------------------------------------------------------------------

def test_generated_mp4_frame_count(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(7):
            img = np.full((48, 64, 3), 30 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    image = read_image(path)
    assert image.is_sequence and image.array.shape == (7, 48, 64, 3)
    assert image.metadata["fps"] == pytest.approx(10)
    means = image.array.reshape(7, -1).mean(axis=1)
    assert np.all(np.diff(means) > 0)  # frames in order
    assert read_frames(path, max_frames=3).shape[0] == 3


def test_animated_gif(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    frames = [PILImage.fromarray(np.full((10, 12), 40 * i, dtype=np.uint8)) for i in range(5)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = read_image(tmp_path / "a.gif")
    assert image.is_sequence and image.array.shape == (5, 10, 12)
    assert [int(f[0, 0]) for f in image.array] == [0, 40, 80, 120, 160]
    frames[0].save(tmp_path / "still.gif")
    still = read_image(tmp_path / "still.gif")
    assert not still.is_sequence and still.array.shape == (10, 12)


# -- npz -------------------------------------------------------------------------------------

def test_load_npz_arrays_real(shared_data: Path) -> None:
    arrays = load_npz_arrays(require(shared_data / "medmnist" / "breastmnist_trainval.npz"))
    assert arrays["train_images"].shape == (546, 28, 28) and arrays["val_labels"].shape == (78, 1)
    assert "test_images" not in arrays


def test_load_npz_arrays_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "nopair.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="train_images") as err:
        load_npz_arrays(tmp_path / "nopair.npz")
    assert "nopair.npz" in str(err.value)
    np.savez(tmp_path / "half.npz", train_images=np.zeros((2, 4, 4)), train_labels=np.zeros(2),
             val_images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="val_labels"):
        load_npz_arrays(tmp_path / "half.npz")
    np.savez(tmp_path / "len.npz", train_images=np.zeros((3, 4, 4)), train_labels=np.zeros(2))
    with pytest.raises(DataError, match="3 cases"):
        load_npz_arrays(tmp_path / "len.npz")
    np.savez(tmp_path / "shape.npz", train_images=np.zeros((2, 4, 4)), train_labels=np.zeros(2),
             val_images=np.zeros((2, 5, 5)), val_labels=np.zeros(2))
    with pytest.raises(DataError, match="different image shapes"):
        load_npz_arrays(tmp_path / "shape.npz")
    np.savez(tmp_path / "obj.npz", train_images=np.array([None, 1], dtype=object), train_labels=np.zeros(2))
    with pytest.raises(InputError, match="pickle"):
        load_npz_arrays(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(InputError, match="junk.npz"):
        load_npz_arrays(tmp_path / "junk.npz")
