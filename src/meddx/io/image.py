"""The one in-memory representation every reader produces.

Axis convention (numpy order, like SimpleITK's GetArrayFromImage):
  2D image      array (y, x) or (y, x, c)
  3D volume     array (z, y, x) or (z, y, x, c)
  sequence      array (t, y, x[, c]) for cine / frames, (t, z, y, x) for 4D volumes
`spacing` lists millimetres per *spatial* array axis in the same order.
`direction[:, k]` is the unit vector (in LPS patient coordinates, DICOM convention)
along spatial array axis k, and `origin` is the LPS position of voxel index 0.
So world = origin + direction @ (spacing * index) -- see `affine_lps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Image:
    """An image or volume with its geometry and de-identified metadata."""

    array: np.ndarray
    spacing: tuple[float, ...] = ()
    origin: tuple[float, ...] = ()
    direction: np.ndarray | None = None
    modality: str = "OT"
    spatial_ndim: int = 2
    has_channels: bool = False
    is_sequence: bool = False
    has_geometry: bool = False
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.spatial_ndim
        if not self.spacing:
            self.spacing = (1.0,) * n
        if not self.origin:
            self.origin = (0.0,) * 3
        if self.direction is None:
            self.direction = np.eye(3)[:, :n] if n < 3 else np.eye(3)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float)

    # -- shape helpers -------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Sizes of the spatial axes only (no time, no channels)."""
        start = 1 if self.is_sequence else 0
        return tuple(self.array.shape[start:start + self.spatial_ndim])

    @property
    def n_channels(self) -> int:
        return int(self.array.shape[-1]) if self.has_channels else 1

    @property
    def n_frames(self) -> int:
        return int(self.array.shape[0]) if self.is_sequence else 1

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing[: self.spatial_ndim]))

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping spatial array indices (numpy order) to LPS millimetres."""
        n = self.spatial_ndim
        aff = np.eye(4)
        d = np.asarray(self.direction, dtype=float).reshape(3, -1)[:, :n]
        aff[:3, :n] = d * np.asarray(self.spacing[:n])[None, :]
        aff[:3, 3] = self.origin[:3]
        return aff

    def affine_ras_xyz(self) -> np.ndarray:
        """NIfTI-style affine: indices in (x, y, z) order (reversed numpy axes) to RAS mm."""
        n = self.spatial_ndim
        lps = self.affine_lps()
        perm = np.eye(4)
        perm[:n, :n] = np.eye(n)[::-1]
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        return flip @ lps @ perm

    def orientation_code(self) -> str:
        """Three-letter RAS-style code (nibabel's convention) of the xyz index axes, e.g. 'LPS'."""
        if self.spatial_ndim < 3:
            return ""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine_ras_xyz()))

    def with_array(self, array: np.ndarray, **changes: Any) -> "Image":
        """A copy with a new array (and optionally other fields changed)."""
        fields = dict(self.__dict__)
        fields.update(changes)
        fields["array"] = array
        fields["metadata"] = dict(self.metadata)
        return Image(**fields)

    def summary(self) -> dict[str, Any]:
        """What `meddx info` prints: shape, spacing, orientation, modality, range..."""
        arr = self.array
        finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
        info: dict[str, Any] = {
            "source": self.source,
            "kind": ("sequence of " if self.is_sequence else "")
            + ("3D volume" if self.spatial_ndim == 3 else "2D image"),
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "channels": self.n_channels,
            "frames": self.n_frames,
            "spacing_mm": [round(s, 5) for s in self.spacing],
            "origin_mm": [round(o, 4) for o in self.origin],
            "orientation": self.orientation_code() or None,
            "has_geometry": self.has_geometry,
            "modality": self.modality,
            "intensity_range": [float(finite.min()), float(finite.max())] if finite.size else None,
        }
        info.update({k: year_only(v) if k.endswith("Date") else v
                     for k, v in self.metadata.items() if k not in info})
        return info


def year_only(date: object) -> str:
    """A DICOM date (YYYYMMDD) reduced to its year, as reports show it (full dates are identifiers under HIPAA
    Safe Harbor)."""
    text = str(date or "").strip()
    return f"{text[:4]} (year only; full date withheld)" if len(text) >= 4 and text[:4].isdigit() else "withheld"
