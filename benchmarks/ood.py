"""Out-of-distribution detection and conformal sets: train on one data set, score every other one.

A small `cnn` is trained (bounded minutes) on a MedMNIST set (default PneumoniaMNIST, optionally BreastMNIST
too) with `meddx.train`, which fits the RUN's fingerprint (Mahalanobis on the penultimate embedding + a 4x4 input
thumbnail, threshold = conformal 95 % of validation) and its calibration (temperature, conformal quantile) on a
validation split. Then, through the RUN's own `Classifier` (`meddx.infer`):

* held-out in-distribution cases (never trained or calibrated on) give the false-flag rate, and the conformal
  coverage / mean set size at 90 % target coverage;
* every out-of-distribution source, as 2D greyscale 8-bit images (what a user exporting a slice or a frame to
  PNG would give; the model's own preprocessing resizes them), gives the detection AUROC of the feature score
  (held-out in-distribution vs that source) and the share flagged at the RUN's threshold.

The metadata checks (modality, dimensionality, size, spacing, intensity range) are not used here: an 8-bit 2D
export defeats them, so the table measures the feature model alone (the harder case). Sources: the other MedMNIST
sets, the six MedNIST classes, the CT and MR DICOM series, the pyradiomics NIfTI volumes, LGG FLAIR slices and
POCUS ultrasound video frames under ../shared/data.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_info, parser, print_header, table, write_results  # noqa: E402

MEDMNIST = SHARED_DATA / "medmnist"


def to_uint8(a: np.ndarray) -> np.ndarray:
    """A 2D array as an 8-bit greyscale image (robust min-max, as a PNG export would look)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=-1)
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _spread(items: list[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).astype(int)]


def _npz_images(name: str, n: int, middle_slice: bool = False) -> list[np.ndarray]:
    f = MEDMNIST / f"{name}_trainval.npz"
    if not f.is_file():
        return []
    with np.load(f, allow_pickle=False) as z:
        imgs = z["train_images"]
    imgs = imgs[np.linspace(0, len(imgs) - 1, min(n, len(imgs))).astype(int)]
    if middle_slice:
        imgs = imgs[:, imgs.shape[1] // 2]
    return [to_uint8(a) for a in imgs]


def _read_slices(path: Path, n: int) -> list[np.ndarray]:
    from meddx.io import read_image

    img = read_image(path)
    arr = img.array
    if img.is_sequence and img.spatial_ndim == 3:  # 4D: first time point
        arr = arr[0]
    if img.spatial_ndim == 2 and not img.is_sequence:
        return [to_uint8(arr)]
    slices = [arr[k] for k in range(arr.shape[0])]
    return [to_uint8(s) for s in _spread(slices, n)]


def _mednist(cls: str, n: int) -> list[np.ndarray]:
    from PIL import Image as PILImage

    files = sorted((SHARED_DATA / "mednist" / cls).glob("*.jpeg"))
    return [to_uint8(np.asarray(PILImage.open(f))) for f in _spread(files, n)]


def _lgg(n: int) -> list[np.ndarray]:
    from meddx.io import read_image

    files = sorted(p for p in (SHARED_DATA / "lgg").glob("*/*.tif") if not p.name.endswith("_mask.tif"))
    return [to_uint8(read_image(f).array[..., 1]) for f in _spread(files, n)]  # FLAIR channel


def _pocus(n: int) -> list[np.ndarray]:
    from meddx.io import read_image

    files = sorted(p for p in (SHARED_DATA / "pocus").glob("*/*") if p.suffix.lower() in (".mp4", ".avi", ".mov"))
    files = _spread(files, max(1, n // 5))
    out = []
    for f in files:
        try:
            frames = read_image(f).array
        except Exception:  # noqa: BLE001 -- an unreadable video is skipped, the rest still measure
            continue
        out += [to_uint8(frames[k]) for k in np.linspace(0, len(frames) - 1, 5).astype(int)]
    return out[:n]


def ood_sources(n: int, exclude: str) -> dict[str, Callable[[], list[np.ndarray]]]:
    """name -> loader of up to `n` 2D uint8 images."""
    src: dict[str, Callable[[], list[np.ndarray]]] = {}
    for name in ("pneumoniamnist", "breastmnist", "retinamnist"):
        if name != exclude:
            src[name] = lambda name=name: _npz_images(name, n)
    src["adrenalmnist3d (mid slices)"] = lambda: _npz_images("adrenalmnist3d", n, middle_slice=True)
    for cls in ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"):
        src[f"MedNIST {cls}"] = lambda cls=cls: _mednist(cls, n)
    src["CT series (DICOM)"] = lambda: _read_slices(SHARED_DATA / "dicom" / "ct_abdomen_ircadb", n)
    src["MR fMRI series (DICOM)"] = lambda: _read_slices(SHARED_DATA / "dicom" / "mr_fmri_ge", n)
    src["MR NIfTI (brain1)"] = lambda: _read_slices(SHARED_DATA / "nifti" / "nifti" / "brain1_image.nii.gz", n)
    src["LGG FLAIR slices"] = lambda: _lgg(n)
    src["POCUS video frames"] = lambda: _pocus(n)
    return src


def train_run(name: str, work: Path, n_train: int, minutes: float, seed: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """Train on `n_train` training cases and half the validation split; return (RUN, held-out images, labels): the
    rest of the validation split plus up to 600 unused training cases."""
    from meddx.data.datasets import Dataset
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    with np.load(MEDMNIST / f"{name}_trainval.npz", allow_pickle=False) as z:
        xtr, ytr = z["train_images"], z["train_labels"].reshape(-1)
        xva, yva = z["val_images"], z["val_labels"].reshape(-1)
    rng = np.random.default_rng(seed)
    perm, vperm = rng.permutation(len(xtr)), rng.permutation(len(xva))
    tr, spare = perm[:n_train], perm[n_train: n_train + 600]
    va, hold = vperm[: len(xva) // 2], vperm[len(xva) // 2:]
    ds = Dataset.from_arrays(np.concatenate([xtr[tr], xva[va]]), np.concatenate([ytr[tr], yva[va]]),
                             splits=["train"] * len(tr) + ["val"] * len(va), source=f"{name} (benchmark subset)")
    cfg = TrainConfig(model="cnn", max_minutes=minutes, seed=seed, epochs=30)
    run = work / f"run_{name}"
    train(ds, run, cfg, verbose=0)
    held_x = np.concatenate([xva[hold], xtr[spare]])
    held_y = np.concatenate([yva[hold], ytr[spare]])
    return run, held_x, held_y


def score(predictor: Any, images: list[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw probabilities, OOD scores, (N, 2) per-view squared distances: embedding, thumbnail) of 2D uint8 images
    through the RUN's preprocessing."""
    from meddx.io.image import Image
    from meddx.train.fingerprint import thumbnail

    x = np.stack([predictor.preprocessing(Image(np.asarray(a))) for a in images])
    probs, scores = predictor._embed(x)
    emb, _ = predictor._features(x)
    views = np.stack(predictor.gate.features.distances(emb, thumbnail(x)), axis=1)
    return probs, scores, views


def evaluate(name: str, work: Path, args: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from meddx.evaluate.classification import roc_auc
    from meddx.evaluate.conformal import calibrate_probs, prediction_sets, set_metrics
    from meddx.infer import load

    t0 = time.monotonic()
    run, hx, hy = train_run(name, work, args.train_cases, args.minutes, args.seed)
    minutes = (time.monotonic() - t0) / 60
    p = load(run, heatmaps=False)
    probs, s_in, v_in = score(p, list(hx))
    cal = calibrate_probs(probs, p.temperature, p.task)
    conf = set_metrics(prediction_sets(cal, p.qhat, "lac"), hy)
    calib = p.info.to_dict().get("calibration", {})
    summary = {"in_distribution": name, "train_minutes": round(minutes, 1), "n_held_out": int(len(hy)),
               "false_flag_rate": float((s_in > 1).mean()), "temperature": p.temperature,
               "ece_val_before": calib.get("ece_before"), "ece_val_after": calib.get("ece_after"),
               "coverage_target": p.coverage, "coverage": conf["coverage"], "mean_set_size": conf["mean_set_size"],
               "val_auc": p.info.val_metrics.get("auc")}
    rows = [{"in-distribution (ID)": name, "out-of-distribution source": "(held-out ID cases)", "n": len(hy),
             "AUROC": None, "AUROC embedding only": None, "AUROC thumbnail only": None,
             "flagged": round(float((s_in > 1).mean()), 3),
             "coverage (90 %)": round(conf["coverage"], 3), "mean set size": round(conf["mean_set_size"], 2)}]
    for src, loader in ood_sources(args.n_ood, name).items():
        try:
            imgs = loader()
        except Exception as exc:  # noqa: BLE001 -- a missing source is reported, the others still measure
            print(f"  {src}: skipped ({type(exc).__name__}: {exc})")
            continue
        if not imgs:
            print(f"  {src}: skipped (not found)")
            continue
        _, s_out, v_out = score(p, imgs)
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        auc = float(roc_auc(y, np.r_[s_in, s_out]))
        per_view = [round(float(roc_auc(y, np.r_[v_in[:, k], v_out[:, k]])), 3) for k in range(2)]
        rows.append({"in-distribution (ID)": name, "out-of-distribution source": src, "n": len(imgs),
                     "AUROC": round(auc, 3), "AUROC embedding only": per_view[0], "AUROC thumbnail only": per_view[1],
                     "flagged": round(float((s_out > 1).mean()), 3),
                     "coverage (90 %)": None, "mean set size": None})
        print(f"  {src}: n={len(imgs)} AUROC {auc:.3f}, flagged {float((s_out > 1).mean()):.3f}", flush=True)
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--id", default="pneumoniamnist", help="comma-separated MedMNIST sets to train on")
    ap.add_argument("--train-cases", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per set")
    ap.add_argument("--n-ood", type=int, default=200, help="images per out-of-distribution source")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.train_cases, args.minutes, args.n_ood = 300, 0.3, 20
    info = machine_info()
    print_header("OOD detection and conformal sets", info)
    rows, summaries = [], []
    with tempfile.TemporaryDirectory(prefix="meddx-ood-") as tmp:
        for name in [s.strip() for s in args.id.split(",") if s.strip()]:
            if not (MEDMNIST / f"{name}_trainval.npz").is_file():
                print(f"{name}: not in {MEDMNIST}; skipped")
                continue
            print(f"training on {name} ({args.train_cases} cases, <= {args.minutes} min) ...", flush=True)
            r, s = evaluate(name, Path(tmp), args)
            rows += r
            summaries.append(s)
    text = table(rows)
    print(text)
    print(table(summaries))
    ood = [r["AUROC"] for r in rows if r["AUROC"] is not None]
    if ood:
        print(f"OOD AUROC: min {min(ood):.3f}, median {float(np.median(ood)):.3f}; "
              f"{sum(a >= 0.95 for a in ood)}/{len(ood)} sources >= 0.95")
    write_results(args, "ood", info, {"rows": rows, "summaries": summaries},
                  {"ood": text, "summary": table(summaries)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
