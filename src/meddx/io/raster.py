"""PNG / JPEG / TIFF / BMP (and still GIF) with Pillow.

Grayscale -> (y, x); colour -> (y, x, 3) with `has_channels`; alpha is dropped; 16-bit and
float modes keep their depth; multi-page TIFF -> a sequence of frames. No geometry (spacing 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddx.errors import InputError
from meddx.io._common import check_size
from meddx.io.image import Image


def _frame_array(im: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
    """One Pillow frame -> numpy (y, x) or (y, x, 3), alpha dropped, depth kept."""
    mode = im.mode
    if mode in ("L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.array(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16, copy=False)
        return arr
    if mode == "LA":
        return np.array(im.getchannel("L"))
    if mode == "1":
        return np.array(im.convert("L"))
    if mode == "P":
        rgb = np.array(im.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0])
        return rgb
    if mode == "RGB":
        return np.array(im)
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.ascontiguousarray(np.array(im)[..., :3])
    return np.array(im.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, PA...


def read_raster(path: str | Path, max_voxels: int = 2**31) -> Image:
    """Read a 2D raster image (or a multi-page TIFF as a sequence)."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    p = Path(path)
    try:
        with PILImage.open(p) as im:
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            check_size((n_frames, im.height, im.width, len(im.getbands())), max_voxels, p)
            fmt = im.format or p.suffix.lstrip(".").upper()
            if n_frames == 1:
                if fmt == "JPEG" or fmt == "MPO":
                    im = ImageOps.exif_transpose(im) or im
                frames = [_frame_array(im)]
            else:
                frames = []
                for i in range(n_frames):
                    im.seek(i)
                    frames.append(_frame_array(im))
    except UnidentifiedImageError:
        raise InputError("not a readable image (Pillow cannot identify it)", p) from None
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"image refused as a possible decompression bomb: {str(exc).split(',')[0]}", p) from None
    except InputError:  # check_size's "too large" (an InputError is a ValueError too)
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"cannot read image: {exc}", p) from None
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise InputError(f"multi-page image has pages of different sizes {sorted(shapes)}", p)
    arr = frames[0] if len(frames) == 1 else np.stack(frames)
    has_channels = frames[0].ndim == 3
    meta = {"format": fmt, "mode_bits": int(frames[0].dtype.itemsize * 8)}
    return Image(arr, modality="OT", spatial_ndim=2, has_channels=has_channels,
                 is_sequence=len(frames) > 1, source=str(p), metadata=meta)
