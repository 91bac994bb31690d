"""Synthetic demo uploads for the service tests (no patient data): PNG bytes, a NIfTI volume with a lesion."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np

TOKEN = "test-token-" + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png_bytes(seed: int = 0, size: int = 64, lesion: bool = True) -> bytes:
    """One synthetic demo slice as PNG bytes."""
    from PIL import Image as PILImage

    from meddx.data.synthetic import make_synthetic_dataset

    d = make_synthetic_dataset(n=2, size=size, lesion_fraction=0.5, seed=seed, dtype="uint8")
    img = d["images"][int(np.argmax(d["labels"])) if lesion else int(np.argmin(d["labels"]))]
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def demo_volume(path: Path, n_slices: int = 12, seed: int = 3) -> Path:
    """A synthetic stack (with a lesion over a run of slices) as NIfTI, 0.8 x 0.8 x 3 mm voxels."""
    import nibabel as nib

    from meddx.data.synthetic import make_synthetic_sequences

    d = make_synthetic_sequences(n_studies=2, n_slices=n_slices, size=64, lesion_fraction=1.0, seed=seed)
    vol = (d["images"][0] * 1000).astype(np.int16)  # (z, y, x)
    img = nib.Nifti1Image(np.transpose(vol, (2, 1, 0)), np.diag([0.8, 0.8, 3.0, 1.0]))
    nib.save(img, str(path))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (a decompression-bomb style header, tiny file)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def zip_bytes(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A zip of `members` (name -> bytes), plus symbolic-link entries (name -> target)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return buf.getvalue()


def dicom_series_zip(folder: Path, n: int = 4) -> bytes:
    """A zip of a small synthetic CT series (with fake patient identifiers in the headers)."""
    from tests.faults.hostile_cases import series

    series(folder, [float(2 * i) for i in range(n)])
    return zip_bytes({f"series/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())})
