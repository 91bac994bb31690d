"""`format_info`: the human-readable text that `meddx info INPUT` prints."""

from __future__ import annotations

from typing import Any

from meddx.io.image import Image

_ORDER = ("source", "kind", "shape", "dtype", "channels", "frames", "spacing_mm", "origin_mm",
          "orientation", "has_geometry", "modality", "intensity_range")
_LABELS = {"spacing_mm": "spacing (mm)", "origin_mm": "origin (LPS mm)", "intensity_range": "intensity range",
           "has_geometry": "geometry", "series_chosen": "series chosen", "series_skipped": "series skipped",
           "files_skipped": "files skipped", "dicom_refs": "DICOM references"}
_MAX_LIST = 5


def _fmt_value(key: str, value: Any) -> str:
    if key == "series_skipped":
        if not value:
            return "none"
        items = [f"{s.get('uid')} ({s.get('n_files')} files"
                 + (f", '{s.get('description')}'" if s.get("description") else "") + ")" for s in value]
        return f"{len(items)}: " + "; ".join(items)
    if key == "files_skipped":
        if not value:
            return "none"
        shown = ", ".join(str(v) for v in value[:_MAX_LIST])
        more = f", ... (+{len(value) - _MAX_LIST} more)" if len(value) > _MAX_LIST else ""
        return f"{len(value)}: {shown}{more}"
    if key == "dicom_refs" and isinstance(value, dict):
        sops = value.get("SOPInstanceUIDs") or []
        n = sum(len(s) if isinstance(s, list) else 1 for s in sops)
        return f"series {value.get('SeriesInstanceUID', '?')}, {n} SOP instance(s)"
    if key == "shape":
        return " x ".join(str(v) for v in value)
    if key == "intensity_range" and value:
        return f"{value[0]:g} .. {value[1]:g}"
    if key == "has_geometry":
        return "yes (physical spacing and orientation)" if value else "no (pixel units)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        if len(value) > 2 * _MAX_LIST:
            return ", ".join(_fmt_value("", v) for v in value[:_MAX_LIST]) + f", ... ({len(value)} values)"
        return ", ".join(_fmt_value("", v) for v in value)
    if value is None:
        return "-"
    return str(value)


def format_info(image: Image) -> str:
    """Multi-line 'label: value' text of `Image.summary()` (geometry first, then header fields)."""
    summary = image.summary()
    keys = [k for k in _ORDER if k in summary] + [k for k in summary if k not in _ORDER]
    width = max(len(_LABELS.get(k, k)) for k in keys)
    lines = []
    for key in keys:
        value = summary[key]
        if key == "orientation" and value is None:
            continue
        lines.append(f"{_LABELS.get(key, key):<{width}}  {_fmt_value(key, value)}")
    return "\n".join(lines)
