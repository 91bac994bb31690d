"""`meddx train DATA --task slice-labelling [--smoother hmm|crf]`: per-slice lesion labels along slice stacks.

(Here beside the smoothers rather than in `meddx.train`: the layers keep `train` and `classic` independent.)

DATA is a folder of stacks, one sub-folder per patient holding numbered slices and their masks (the LGG layout:
`<patient>/<patient>_<n>.tif` + `<patient>_<n>_mask.tif`, or PNGs); a slice's label is "its mask is non-empty".
The recipe is the one `benchmarks/sequence_lgg.py` measures (see `meddx.classic.slice_labelling`):

1. a per-pixel gradient-boosting lesion scorer (`PixelLesionScorer`) trained on the training patients' masks,
   summarised per slice (peak probability, lesion area ...);
2. a class-balanced logistic regression on those slice features, trained on OUT-OF-FOLD features (each training
   patient scored by a pixel model that never saw it), so its inputs look like a new patient's;
3. an HMM or CRF smoother fitted on the regression's grouped cross-validated probabilities of the training
   patients, which labels each slice from the whole stack's probabilities.

Patients are split into train / test by `seed` and `test_fraction` (whole patients; recorded in run.json, which
`meddx evaluate --split test` reads). The RUN holds no pickle: the booster's trees as numeric arrays
(`slice_scorer.npz`, read with `allow_pickle=False`), the regression and the smoother as JSON numbers.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meddx.errors import ConfigError, DataError, InputError
from meddx.io.run_info import RUN_FILE, RunInfo, SliceLabellingSettings
from meddx.utils import atomic_path, atomic_write_text

LOGGER = logging.getLogger("meddx")
CLASS_NAMES = ["normal", "lesion"]
_SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

__all__ = ["CLASS_NAMES", "find_stacks", "load_labelled_stacks", "split_patients", "train_slice_labeller"]


def _version() -> str:
    """The installed meddx version (read from the package metadata: importing `meddx` itself would cross layers)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meddx")
    except PackageNotFoundError:
        return ""


def _holds_slices(folder: Path) -> bool:
    return any(c.is_file() and c.suffix.lower() in _SLICE_SUFFIXES for c in folder.iterdir())


def find_stacks(data: str | Path) -> list[Path]:
    """The stack folders of DATA: its sub-folders (one per patient), or DATA itself when it holds the slices."""
    root = Path(data).expanduser()
    if not root.is_dir():
        raise InputError("DATA for slice labelling must be a folder of slice-stack folders (one per patient)", root)
    subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subs:
        if _holds_slices(root):
            return [root]
        raise DataError("no slice stacks here: expected one sub-folder of numbered slice images per patient", root)
    for d in subs:
        if not _holds_slices(d):
            raise InputError("stack folder holds no slice images (.tif/.png/.jpg/.bmp)", d)
    return subs


def load_labelled_stacks(data: str | Path, size: int = 64, channels: int = 3) -> dict[str, Any]:
    """Every stack of DATA with its masks, per patient: `patient_ids` (folder names), `frames` (T, size, size,
    channels) float32 in [0, 1], `masks` (T, size, size) bool, `labels` (T,) 0/1 from the full-resolution masks,
    `numbers` (T,) slice numbers, `folders`. A slice without a mask file is an error naming its folder."""
    from meddx.classic.slice_labelling import resize_masks, stack_frames
    from meddx.data.sequences import list_slice_files, load_sequence
    from meddx.errors import naming

    out: dict[str, Any] = {"patient_ids": [], "frames": [], "masks": [], "labels": [], "numbers": [], "folders": []}
    for d in find_stacks(data):
        with naming(d):
            entries = list_slice_files(d)
            missing = [e[1].name for e in entries if e[2] is None]
            if missing:
                raise DataError(f"{len(missing)} slice(s) without a *_mask file (e.g. {', '.join(missing[:3])}); "
                                "slice labelling trains and evaluates on per-slice lesion masks", d)
            seq = load_sequence(d, normalise=False)
            try:
                frames = stack_frames(seq.frames, size, channels)
            except ValueError as exc:
                raise InputError(f"cannot use these slices: {exc}", d) from None
        full = np.asarray(seq.masks).astype(bool)
        out["patient_ids"].append(d.name)
        out["frames"].append(frames)
        out["masks"].append(resize_masks(full, size))
        out["labels"].append(full.reshape(len(full), -1).any(axis=1).astype(np.int64))
        out["numbers"].append(np.asarray(seq.numbers))
        out["folders"].append(str(d))
    return out


def split_patients(patient_ids: list[str], seed: int = 0, test_fraction: float = 0.15) -> dict[str, str]:
    """patient -> "train" | "test": whole patients, `test_fraction` of them (at least one; none when it is 0: then
    evaluate on other DATA, whose patients all count as test) held out, by `seed`."""
    ids = sorted(set(patient_ids))
    n = len(ids)
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    need = 2 if test_fraction == 0 else 3
    if n < need:
        raise DataError(f"slice labelling needs at least {need} patients (stack folders) here; got {n}")
    n_test = 0 if test_fraction == 0 else min(max(1, int(round(test_fraction * n))), n - 2)
    order = np.random.default_rng(seed).permutation(n)
    test = {ids[i] for i in order[:n_test]}
    return {p: ("test" if p in test else "train") for p in ids}


def _classifier() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))


def _smoother(name: str) -> Any:
    from meddx.classic.slice_labelling import CRFSmoother, HMMSmoother

    if name == "hmm":
        return HMMSmoother()
    return CRFSmoother(c1=0.1, c2=0.1, threshold="prior", position=False)  # the benchmark's untuned CRF


def fit_slice_labeller(frames: list[np.ndarray], masks: list[np.ndarray], labels: list[np.ndarray],
                       smoother: str = "hmm", seed: int = 0, brain_channel: int = 1) -> dict[str, Any]:
    """Fit scorer, per-slice classifier and smoother on training stacks (the benchmark's recipe for one fold).

    Returns {"scorer", "classifier", "smoother", "oof_probs" (per stack), "oof_smoothed" (per stack)}."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from meddx.classic.slice_labelling import PixelLesionScorer, out_of_fold_slice_features

    y = np.concatenate(labels)
    if y.all() or not y.any():
        raise DataError("the training stacks need both lesion and lesion-free slices")
    try:
        feats = out_of_fold_slice_features(frames, masks, n_splits=4, seed=seed, brain_channel=brain_channel)
        X = np.concatenate(feats)
        groups = np.concatenate([[j] * len(v) for j, v in enumerate(labels)])
        cv = GroupKFold(n_splits=min(4, len(frames)))
        oof = cross_val_predict(_classifier(), X, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
        bounds = np.cumsum([0] + [len(v) for v in labels])
        oof_seqs = [oof[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        classifier = _classifier().fit(X, y)
        scorer = PixelLesionScorer(seed=seed, brain_channel=brain_channel).fit(frames, masks)
        smooth = _smoother(smoother).fit(oof_seqs, labels)
    except ValueError as exc:  # e.g. a cross-validation fold whose stacks hold no lesion pixel
        raise DataError(f"cannot fit the slice labeller on these stacks: {exc}") from None
    return {"scorer": scorer, "classifier": classifier, "smoother": smooth, "oof_probs": oof_seqs,
            "oof_smoothed": smooth.predict(oof_seqs)}


def _check_out(run_dir: Path, overwrite: bool, files: tuple[str, ...]) -> None:
    if (run_dir / RUN_FILE).exists():
        if not overwrite:
            raise ConfigError(f"{run_dir}: already holds a trained model (run.json); use another --out or --overwrite")
        for name in (RUN_FILE, *files):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def train_slice_labeller(data: str | Path, out: str | Path, smoother: str = "hmm", seed: int = 0,
                         test_fraction: float = 0.15, image_size: int | None = None, overwrite: bool = False,
                         config: dict[str, Any] | None = None,
                         log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a slice labeller (`smoother`: "hmm" or "crf") on DATA's labelled stacks into the RUN folder `out`
    (`config`: the full training settings, recorded in run.json); returns run.json's dict."""
    from meddx.classic.slice_export import export_linear, export_scorer, export_smoother
    from meddx.classic.slice_labelling import slice_prf

    log = log or LOGGER.info
    if smoother not in ("hmm", "crf"):
        raise ConfigError(f"smoother must be hmm or crf, got {smoother!r}")
    if image_size is not None and not 32 <= image_size <= 256:
        raise ConfigError(f"slice labelling works on 32-256 px slices; --image-size {image_size} is outside")
    settings = SliceLabellingSettings(smoother=smoother, frame_size=int(image_size or 64))
    run_dir = Path(out)
    _check_out(run_dir, overwrite, (settings.scorer_file, settings.model_file))
    t0 = time.monotonic()
    stacks = load_labelled_stacks(data, settings.frame_size, settings.channels)
    splits = split_patients(stacks["patient_ids"], seed, test_fraction)
    tr = [i for i, p in enumerate(stacks["patient_ids"]) if splits[p] == "train"]
    n_slices = int(sum(len(v) for v in stacks["labels"]))
    n_pos = int(sum(int(v.sum()) for v in stacks["labels"]))
    log(f"read {len(stacks['patient_ids'])} stacks ({n_slices} slices, {n_pos} with lesion) in "
        f"{time.monotonic() - t0:.0f} s; {len(tr)} training / {len(stacks['patient_ids']) - len(tr)} test patients")
    log(f"fitting the pixel lesion scorer, the per-slice classifier and the {smoother.upper()} smoother")
    t1 = time.monotonic()
    fitted = fit_slice_labeller([stacks["frames"][i] for i in tr], [stacks["masks"][i] for i in tr],
                                [stacks["labels"][i] for i in tr], smoother, seed, settings.brain_channel)
    seconds = time.monotonic() - t1
    tr_labels = [stacks["labels"][i] for i in tr]
    raw = slice_prf(tr_labels, [(p >= settings.raw_threshold).astype(int) for p in fitted["oof_probs"]])
    smoothed = slice_prf(tr_labels, fitted["oof_smoothed"])
    val_metrics: dict[str, Any] = {
        "what": "training patients, out-of-fold slice probabilities (smoother fitted on them: optimistic)",
        "n": int(sum(len(v) for v in tr_labels)), "n_patients": len(tr), "raw": raw, "smoothed": smoothed,
        "f1_raw": raw["f1"], "f1_smoothed": smoothed["f1"]}
    try:
        from sklearn.metrics import roc_auc_score

        val_metrics["auc"] = float(roc_auc_score(np.concatenate(tr_labels), np.concatenate(fitted["oof_probs"])))
    except ValueError:
        pass

    with atomic_path(run_dir / settings.scorer_file) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **export_scorer(fitted["scorer"]))
    params = {"classifier": export_linear(fitted["classifier"]), "smoother": export_smoother(fitted["smoother"]),
              "slice_features": "PixelLesionScorer.slice_features"}
    atomic_write_text(run_dir / settings.model_file, json.dumps(params, indent=1) + "\n")
    info = RunInfo(
        kind="slice_labeller", model=f"pixel_gbm+logreg+{smoother}", task="binary", class_names=list(CLASS_NAMES),
        spatial_ndim=2, input_shape=[None, settings.frame_size, settings.frame_size, settings.channels],
        preprocessing={}, threshold=settings.raw_threshold, positive_class=CLASS_NAMES[1],
        config={**(config or {}), "task": "slice-labelling", "smoother": smoother, "seed": seed,
                "test_fraction": test_fraction, "image_size": settings.frame_size},
        data={"source": str(data), "kind": "slice_stacks", "splits": splits,
              "summary": {"patients": len(stacks["patient_ids"]), "slices": n_slices, "lesion slices": n_pos,
                          "training patients": len(tr)}},
        val_metrics=val_metrics, training_seconds=round(seconds, 1), meddx_version=_version(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), slice_labelling=settings)
    info.write(run_dir)  # last: its presence marks a finished RUN
    log(f"done in {seconds:.0f} s: out-of-fold per-slice F1 on the training patients raw {raw['f1']:.3f}, "
        f"{smoother.upper()}-smoothed {smoothed['f1']:.3f} -> {run_dir}")
    return info.to_dict()
