"""The results store: one folder per processed study (result.json without PHI, arrays and PNGs the viewer draws),
shared by `meddx serve` (its viewer lists it) and `meddx pacs watch` (writes what it processed).

Layout of `ROOT/<study_id>/` (each written whole in a hidden temporary folder, then renamed into place):
`result.json` (study id, model name/version, kind, label, probabilities, threshold, lesion candidates with physical
sizes, in_distribution / ood_score / prediction_set when the Prediction has them, status, created time, optional
Orthanc study id), `image.bin` (the slices the viewer draws: uint8 grey, or int16 Hounsfield units for CT so the
viewer can apply window/level presets; C order, shape in result.json), `overlay.bin` (uint8: heatmap 0-255 or
mask 0/255, same shape), `key_<k>.png` (key images with the overlay burnt in, drawn from those arrays on
first request) and optional attachments
(`report.html`, `report.pdf`). No file names, patient names, IDs or dates are stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import InputError
from meddx.utils import to_jsonable

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
IMAGE_FILE = "image.bin"
OVERLAY_FILE = "overlay.bin"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
ATTACHMENTS = ("report.html", "report.pdf")
MAX_INPLANE = 512  # the viewer's arrays are downsampled in-plane to at most this
MAX_VIEW_VOXELS = 8_000_000  # and to at most this many voxels in all (a 129-slice 512x512 CT -> 129x249x249)
CT_PRESETS = {"soft tissue": [40, 400], "liver": [60, 160], "lung": [-600, 1500], "bone": [400, 1800],
              "brain": [40, 80]}
LESION_KEYS = ("id", "n_px", "score", "score_mean", "centroid_px", "bbox_px", "extent_px", "peak_px", "spacing_mm",
               "centroid_mm", "extent_mm", "area_mm2", "volume_ml", "max_diameter_mm", "centroid_lps_mm", "slice",
               "label")
DETAIL_STRINGS = ("units",)  # the only free-text details kept (others may carry names)


def new_study_id() -> str:
    """A fresh study id: UTC time (sorts by arrival) plus 8 random hex digits; carries nothing of the input."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def check_id(study_id: str) -> str:
    """`study_id` if it is a safe folder name (letters, digits, . _ -), else InputError (no path tricks)."""
    if not isinstance(study_id, str) or not ID_PATTERN.match(study_id) or ".." in study_id:
        raise InputError("invalid study id (letters, digits, '.', '_' and '-' only, at most 80)")
    return study_id


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _clean_lesion(les: dict[str, Any], i: int) -> dict[str, Any]:
    """A lesion candidate's numbers (no mask array), as plain JSON values."""
    out: dict[str, Any] = {"id": i + 1}
    for k in LESION_KEYS:
        if k in les and k != "id":
            out[k] = les[k]
    return to_jsonable(out)


def _clean_details(details: dict[str, Any]) -> dict[str, Any]:
    """Numeric / boolean details, and the few whitelisted strings (no free text that could carry PHI)."""
    out: dict[str, Any] = {}
    for k, v in (details or {}).items():
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            out[str(k)] = v
        elif isinstance(v, str) and k in DETAIL_STRINGS:
            out[str(k)] = v[:40]
    return to_jsonable(out)


def _ood_fields(prediction: Any) -> dict[str, Any]:
    """in_distribution / ood_score / prediction_set when the Prediction carries them (added by the OOD work)."""
    out: dict[str, Any] = {}
    for name in ("in_distribution", "ood_score", "ood_threshold", "prediction_set", "coverage"):
        value = getattr(prediction, name, None)
        if value is None:
            value = (getattr(prediction, "details", None) or {}).get(name)
        if value is not None:
            if isinstance(value, np.ndarray):
                value = value.tolist()
            out[name] = to_jsonable(value)
    return out


def _as_stack(arr: np.ndarray | None) -> np.ndarray | None:
    """(Z, H, W): a 2D plane gets one slice axis; channels were already averaged by the predictor's display."""
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        return a
    if a.ndim == 4:  # e.g. (T, H, W, C): grey by channel mean
        return a.mean(axis=-1)
    raise InputError(f"cannot display an array of shape {a.shape}")


def _view_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    z, h, w = shape
    f = min(1.0, MAX_INPLANE / max(h, w), float(np.sqrt(MAX_VIEW_VOXELS / max(z * h * w, 1))))
    return z, max(1, int(round(h * f))), max(1, int(round(w * f)))


def _fit(arr: np.ndarray, shape: tuple[int, int, int], order: int) -> np.ndarray:
    if tuple(arr.shape) == tuple(shape):
        return arr
    from skimage.transform import resize

    return resize(arr.astype(np.float32), shape, order=order, anti_aliasing=False, preserve_range=True)


def _overlay(prediction: Any) -> tuple[np.ndarray | None, str | None]:
    """(overlay 0-1 in the display's shape, 'mask' | 'heatmap'), or (None, None)."""
    if getattr(prediction, "mask", None) is not None:
        return np.asarray(prediction.mask) > 0, "mask"
    if getattr(prediction, "heatmap", None) is not None:
        return np.clip(np.asarray(prediction.heatmap, dtype=np.float32), 0, 1), "heatmap"
    return None, None


def _key_slices(prediction: Any, overlay: np.ndarray | None, n_slices: int) -> list[int]:
    if n_slices <= 1:
        return [0]
    keys = [int(k) for k in (getattr(prediction, "key_slices", None) or []) if 0 <= int(k) < n_slices]
    if not keys and overlay is not None:
        amount = overlay.reshape(n_slices, -1).sum(axis=1)
        keys = [int(k) for k in np.argsort(-amount)[:3] if amount[k] > 0]
    return keys[:3] or [n_slices // 2]


def composite_png(grey: np.ndarray, overlay: np.ndarray | None, kind: str | None, path: Path) -> Path:
    """Write one grey plane (0-1) with its overlay burnt in (heatmap: red-yellow, mask: red) as a PNG."""
    from PIL import Image as PILImage

    g = np.clip(np.asarray(grey, dtype=np.float32), 0, 1)
    rgb = np.stack([g, g, g], axis=-1)
    if overlay is not None:
        o = np.clip(np.asarray(overlay, dtype=np.float32), 0, 1)
        if kind == "mask":
            colour, alpha = np.array([1.0, 0.1, 0.1]), 0.45 * (o > 0)
        else:
            colour = np.stack([np.ones_like(o), o, np.zeros_like(o)], axis=-1)
            alpha = 0.55 * o * (o > 0.2)
        rgb = rgb * (1 - alpha[..., None]) + colour * alpha[..., None]
    PILImage.fromarray((rgb * 255).round().astype(np.uint8)).save(path, compress_level=1)
    return path


def _write_view(folder: Path, prediction: Any) -> dict[str, Any]:
    """image.bin / overlay.bin / key PNGs for the viewer; their description for result.json."""
    display = _as_stack(prediction.display)
    overlay, kind = _overlay(prediction)
    overlay = _as_stack(overlay) if overlay is not None else None
    if overlay is not None and overlay.shape != display.shape:
        overlay = _fit(overlay.astype(np.float32), display.shape, order=0 if kind == "mask" else 1)
    shape = _view_shape(display.shape)
    image = getattr(prediction, "image", None)
    is_ct = (getattr(image, "modality", "") == "CT" and not getattr(image, "has_channels", False)
             and not getattr(image, "is_sequence", False) and _as_stack(image.array).shape == display.shape)
    view: dict[str, Any] = {"shape": list(shape), "image": IMAGE_FILE}
    grey_small = _fit(display, shape, order=1)
    if is_ct:
        hu = _fit(_as_stack(np.asarray(image.array, dtype=np.float32)), shape, order=1)
        np.clip(np.round(hu), -1024, 3071).astype("<i2").tofile(folder / IMAGE_FILE)
        view.update(dtype="int16", unit="HU", presets=CT_PRESETS, window=CT_PRESETS["soft tissue"])
    else:
        (np.clip(grey_small, 0, 1) * 255).round().astype(np.uint8).tofile(folder / IMAGE_FILE)
        view.update(dtype="uint8", unit="grey")
    if overlay is not None:
        small = _fit(overlay.astype(np.float32), shape, order=0 if kind == "mask" else 1)
        (np.clip(small, 0, 1) * 255).round().astype(np.uint8).tofile(folder / OVERLAY_FILE)
        view.update(overlay=OVERLAY_FILE, overlay_kind=kind)
    keys = _key_slices(prediction, overlay, display.shape[0])
    view["key_slices"] = keys
    view["key_images"] = [f"key_{k:03d}.png" for k in keys]  # drawn from the arrays on first request
    return view


def _key_image(folder: Path, name: str) -> Path | None:
    """Draw the key image `name` listed in result.json from image.bin / overlay.bin (the stored view arrays) and
    keep it; None when the study does not list it. Done on first request, not when the study is stored, so the
    service's predict path does not pay a PNG encoding per study that may never be viewed."""
    try:
        view = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8")).get("view") or {}
    except (OSError, ValueError):
        return None
    if name not in (view.get("key_images") or []):
        return None
    k = int(name[4:-4])
    shape = tuple(int(v) for v in view["shape"])
    if view.get("dtype") == "int16":
        hu = np.fromfile(folder / IMAGE_FILE, dtype="<i2").reshape(shape)[k].astype(np.float32)
        level, width = view.get("window") or CT_PRESETS["soft tissue"]
        grey = (hu - (level - width / 2)) / width
    else:
        grey = np.fromfile(folder / IMAGE_FILE, dtype=np.uint8).reshape(shape)[k] / 255.0
    overlay = None
    if view.get("overlay"):
        overlay = np.fromfile(folder / OVERLAY_FILE, dtype=np.uint8).reshape(shape)[k] / 255.0
    fd, tmp = tempfile.mkstemp(prefix=".key-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        composite_png(grey, overlay, view.get("overlay_kind"), Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder / name


def result_dict(study_id: str, prediction: Any, model_name: str, model_version: str | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result.json content for one Prediction (no PHI: no file names, patient data or dates of the study)."""
    image = getattr(prediction, "image", None)
    res: dict[str, Any] = {
        "id": check_id(study_id), "created": _now(), "status": "done",
        "model": {"name": model_name, "version": model_version},
        "kind": prediction.kind, "label": prediction.label, "probability": float(prediction.probability),
        "probabilities": {str(k): float(v) for k, v in prediction.probabilities.items()},
        "threshold": prediction.threshold, "positive_class": prediction.positive_class,
        "lesions": [_clean_lesion(les, i) for i, les in enumerate(prediction.lesions or [])],
        "slice_scores": prediction.slice_scores, "key_slices": prediction.key_slices,
        "details": _clean_details(prediction.details),
    }
    if image is not None:
        res["input"] = {"modality": getattr(image, "modality", None), "spacing": list(image.spacing),
                        "shape": list(getattr(image, "spatial_shape", ())), "is_sequence": bool(image.is_sequence)}
    res.update(_ood_fields(prediction))
    if res.get("in_distribution") is False:
        res["status"] = "ood"
    res.update(extra or {})
    return to_jsonable(res)


def _install(root: Path, study_id: str, fill: Any) -> Path:
    """Build the study folder in a hidden temp folder via `fill(tmp)`, then rename it into place (replacing)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / study_id
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{study_id}-", dir=root))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{study_id}-", dir=root))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def save_result(root: str | Path, study_id: str | None, prediction: Any, model_name: str,
                extra: dict[str, Any] | None = None, model_version: str | None = None,
                attachments: dict[str, str | Path | bytes] | None = None) -> Path:
    """Store one study's Prediction under `root/<study_id>` (a new id when None) atomically; returns the folder.

    `extra` adds top-level fields to result.json (e.g. {"orthanc_study": "...", "status": "..."}: no PHI);
    `attachments` maps names in ATTACHMENTS to a file path or bytes (e.g. the rendered report)."""
    study_id = check_id(study_id or new_study_id())
    store_prediction(root, study_id, prediction, model_name, extra, model_version, attachments)
    return Path(root) / study_id


def store_prediction(root: str | Path, study_id: str, prediction: Any, model_name: str,
                     extra: dict[str, Any] | None = None, model_version: str | None = None,
                     attachments: dict[str, str | Path | bytes] | None = None) -> dict[str, Any]:
    """`save_result`, returning the stored result.json content instead of the folder."""
    res = result_dict(study_id, prediction, model_name, model_version, extra)

    def fill(tmp: Path) -> None:
        res["view"] = _write_view(tmp, prediction)
        for name, data in (attachments or {}).items():
            _write_attachment(tmp, name, data)
        res["attachments"] = sorted(n for n in ATTACHMENTS if (tmp / n).is_file())
        (tmp / RESULT_FILE).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")

    _install(Path(root), study_id, fill)
    return res


def save_status(root: str | Path, study_id: str | None, status: str, model_name: str,
                extra: dict[str, Any] | None = None, model_version: str | None = None) -> Path:
    """Store a study that has no prediction (e.g. status 'failed' or 'queued'): result.json only."""
    study_id = check_id(study_id or new_study_id())
    res = to_jsonable({"id": study_id, "created": _now(), "status": status,
                       "model": {"name": model_name, "version": model_version}, **(extra or {})})

    def fill(tmp: Path) -> None:
        (tmp / RESULT_FILE).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")

    return _install(Path(root), study_id, fill)


def _write_attachment(folder: Path, name: str, data: str | Path | bytes) -> None:
    if name not in ATTACHMENTS:
        raise InputError(f"unknown attachment '{name}' (allowed: {', '.join(ATTACHMENTS)})")
    if isinstance(data, bytes):
        (folder / name).write_bytes(data)
    elif name.endswith(".html"):  # a report folder's HTML: its PNGs inlined, so the one file stands alone
        html = Path(data).read_text(encoding="utf-8", errors="replace")
        (folder / name).write_text(inline_images(html, Path(data).parent), encoding="utf-8")
    else:
        shutil.copyfile(data, folder / name)


def inline_images(html: str, folder: Path) -> str:
    """`html` with the PNGs it names in `folder` inlined as data: URIs (one self-contained file)."""
    import base64

    def sub(m: re.Match[str]) -> str:
        src = m.group(1)
        p = folder / src
        if "/" in src or "\\" in src or not src.endswith(".png") or not p.is_file():
            return m.group(0)
        return 'src="data:image/png;base64,' + base64.b64encode(p.read_bytes()).decode("ascii") + '"'

    return re.sub(r'src="([^"]+)"', sub, html)


def attach(root: str | Path, study_id: str, name: str, data: str | Path | bytes) -> Path:
    """Add or replace one attachment (report.html / report.pdf) of a stored study, atomically."""
    folder = Path(root) / check_id(study_id)
    if not (folder / RESULT_FILE).is_file():
        raise InputError("no such study", study_id)
    if name not in ATTACHMENTS:
        raise InputError(f"unknown attachment '{name}' (allowed: {', '.join(ATTACHMENTS)})")
    from meddx.utils import atomic_path

    with tempfile.TemporaryDirectory(dir=folder, prefix=".att-") as work:
        _write_attachment(Path(work), name, data)
        with atomic_path(folder / name) as tmp:
            os.replace(Path(work) / name, tmp)
    res = load_result(root, study_id)
    res["attachments"] = sorted(n for n in ATTACHMENTS if (folder / n).is_file())
    from meddx.utils import atomic_write_json

    atomic_write_json(folder / RESULT_FILE, res)
    return folder / name


def load_result(root: str | Path, study_id: str) -> dict[str, Any]:
    """result.json of one stored study; InputError when the id is invalid or absent."""
    path = Path(root) / check_id(study_id) / RESULT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such study", study_id) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable result: {exc}", study_id) from None


def list_results(root: str | Path) -> list[dict[str, Any]]:
    """Every stored study's result.json, newest first (hidden temp folders and unreadable ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.name.startswith(".") or not d.is_dir() or not ID_PATTERN.match(d.name):
            continue
        try:
            out.append(json.loads((d / RESULT_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            log.debug("skipping unreadable result in %s", d.name)
    out.sort(key=lambda r: (str(r.get("created", "")), str(r.get("id", ""))), reverse=True)
    return out


def study_file(root: str | Path, study_id: str, name: str) -> Path:
    """Path of one of a stored study's files the viewer may fetch (its arrays, key PNGs, attachments)."""
    folder = Path(root) / check_id(study_id)
    allowed = name in (RESULT_FILE, IMAGE_FILE, OVERLAY_FILE, *ATTACHMENTS) or bool(
        re.fullmatch(r"key_\d{3,5}\.png", name))
    if allowed and not (folder / name).is_file() and name.startswith("key_"):
        _key_image(folder, name)
    if not allowed or not (folder / name).is_file():
        raise InputError("no such file", f"{study_id}/{name}" if allowed else study_id)
    return folder / name


def processed(root: str | Path, key: str, value: Any) -> list[str]:
    """Ids of stored studies whose result.json has `key` == `value` (e.g. an Orthanc study id: idempotency)."""
    return [r["id"] for r in list_results(root) if r.get(key) == value]
