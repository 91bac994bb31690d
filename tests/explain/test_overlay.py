"""Overlay PNGs: readable size, real content, lesion/truth outlines drawn, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from meddx.errors import InputError
from meddx.explain import heatmap_to_lesions, save_overlay, save_volume_overlay


def _colour_fraction(arr: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> float:
    return float(np.mean(np.all(np.abs(arr[..., :3].astype(int) - np.array(rgb)) <= tol, axis=-1)))


def _scene_2d():
    yy, xx = np.mgrid[:64, :80]
    image = np.random.default_rng(0).normal(100, 10, (64, 80)) + 80 * ((yy - 20) ** 2 + (xx - 30) ** 2 < 50)
    heat = np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 40.0) + 0.6 * np.exp(-((yy - 45) ** 2 + (xx - 60) ** 2) / 30.0)
    truth = (yy - 20) ** 2 + (xx - 30) ** 2 < 50
    return image, heat / heat.max(), truth


def test_save_overlay_png(tmp_path):
    image, heat, truth = _scene_2d()
    lesions = heatmap_to_lesions(heat, spacing=(0.5, 0.5))
    assert len(lesions) == 2
    out = save_overlay(image, heat, tmp_path / "sub" / "overlay.png", lesions=lesions, mask=truth, title="Grad-CAM")
    assert out == tmp_path / "sub" / "overlay.png"
    with PILImage.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (600, 500)
        arr = np.asarray(im.convert("RGB"))
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50  # not a single colour: image + colour map + bar
    assert _colour_fraction(arr, (0, 229, 255), tol=30) > 0.0005  # cyan lesion outlines/boxes drawn
    assert _colour_fraction(arr, (124, 252, 0), tol=30) > 0.0002  # green truth outline drawn
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["overlay.png"]  # no temp file left


def test_save_overlay_plain_and_rgb_and_resized_heat(tmp_path):
    rgb = np.random.default_rng(1).random((32, 32, 3))
    small_heat = np.random.default_rng(2).random((8, 8))
    out = save_overlay(rgb, small_heat, tmp_path / "rgb.png", figsize=(4.0, 3.0), dpi=50)
    with PILImage.open(out) as im:
        assert im.size == (200, 150)
    with pytest.raises(InputError):
        save_overlay(np.zeros((4, 4, 4, 4)), small_heat, tmp_path / "bad.png")
    with pytest.raises(InputError):
        save_overlay(rgb, small_heat, tmp_path / "bad.png", mask=np.zeros((5, 5)))
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("mode,size", [("orthogonal", (1200, 460)), ("montage", (1200, 820))])
def test_save_volume_overlay(tmp_path, mode, size):
    zz, yy, xx = np.indices((16, 24, 24))
    vol = np.random.default_rng(3).normal(0, 1, (16, 24, 24))
    heat = np.exp(-((zz - 5) ** 2 + (yy - 8) ** 2 + (xx - 15) ** 2) / 6.0)
    truth = (zz - 5) ** 2 + (yy - 8) ** 2 + (xx - 15) ** 2 < 9
    lesions = heatmap_to_lesions(heat, spacing=(3.0, 1.0, 1.0))
    out = save_volume_overlay(vol, heat, tmp_path / f"{mode}.png", lesions=lesions, mask=truth,
                              spacing=(3.0, 1.0, 1.0), mode=mode, title="3D Grad-CAM")
    with PILImage.open(out) as im:
        assert im.size == size
        arr = np.asarray(im.convert("RGB"))
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50
    assert _colour_fraction(arr, (0, 229, 255), tol=30) > 0.0002


def test_save_volume_overlay_bad_mode(tmp_path):
    with pytest.raises(InputError):
        save_volume_overlay(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), tmp_path / "x.png", mode="cine")
    assert not (tmp_path / "x.png").exists()
