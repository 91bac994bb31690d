"""Lesion volumes from real NIfTI / NRRD label maps (../shared/data/nifti): exact, and format-independent."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.explain import mask_to_lesions
from meddx.io import read_image

# case -> total lesion voxels (counted independently of meddx when the data were added)
CASES = {"brain1": 4137, "brain2": 453, "breast1": 143}


def _read(shared_data, fmt: str, case: str):

    ext = {"nifti": "nii.gz", "nrrd": "nrrd"}[fmt]
    path = shared_data / "nifti" / fmt / f"{case}_label.{ext}"
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return read_image(path)


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_volume_is_voxel_count_times_voxel_volume(shared_data, case: str, fmt: str) -> None:
    img = _read(shared_data, fmt, case)
    arr = np.asarray(img.array)
    assert arr.ndim == 3
    voxel_mm3 = float(np.prod(img.spacing[:3]))
    lesions = mask_to_lesions(arr, spacing=img.spacing)
    assert lesions, "no lesions found in a non-empty label map"
    assert int(np.count_nonzero(arr)) == CASES[case]
    assert sum(les["n_px"] for les in lesions) == CASES[case]
    for les in lesions:
        assert les["volume_ml"] == pytest.approx(les["n_px"] * voxel_mm3 / 1000.0, rel=1e-12, abs=0)
    total_ml = sum(les["volume_ml"] for les in lesions)
    assert total_ml == pytest.approx(CASES[case] * voxel_mm3 / 1000.0, rel=1e-12, abs=0)
    # passing the Image itself (geometry + LPS centroids) gives the same volumes
    with_image = mask_to_lesions(arr, spacing=img)
    assert [les["volume_ml"] for les in with_image] == [les["volume_ml"] for les in lesions]


@pytest.mark.parametrize("case", sorted(CASES))
def test_nrrd_and_nifti_copies_agree(shared_data, case: str) -> None:
    nii, nrrd = _read(shared_data, "nifti", case), _read(shared_data, "nrrd", case)
    np.testing.assert_array_equal(np.asarray(nii.array) != 0, np.asarray(nrrd.array) != 0)
    np.testing.assert_allclose(nii.spacing, nrrd.spacing, rtol=1e-6)
    a = mask_to_lesions(np.asarray(nii.array), spacing=nii.spacing)
    b = mask_to_lesions(np.asarray(nrrd.array), spacing=nrrd.spacing)
    assert [les["n_px"] for les in a] == [les["n_px"] for les in b]
    assert [les["centroid_px"] for les in a] == [les["centroid_px"] for les in b]
    np.testing.assert_allclose([les["volume_ml"] for les in a], [les["volume_ml"] for les in b], rtol=1e-6)
