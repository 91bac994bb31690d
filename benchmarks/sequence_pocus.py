"""POCUS lung-ultrasound videos (covid / pneumonia / regular): sequence heads vs per-frame CNN averaging.

Data: ../shared/data/pocus/manifest.csv, 69 videos from 12 sources (`patient_id` = the source or case).
Protocol: source-grouped, label-stratified K-fold (`meddx.data.splits.kfold_splits`, K=4 by default, seed 0):
every video is predicted once by models that never saw its source. Inside each training fold, 25% of the
training sources are the validation split (best-epoch selection, early stopping) and there is no inner test
split (`val_fraction=0.25, test_fraction=0`, written as the manifest's `split` column: with 15% one source
of one class is drawn and training stops with "val split holds only one class").

Methods, all trained through meddx's own code:
- sequence heads `lstm`, `tcn`, `transformer`: `meddx.train.sequence.train_sequence_classifier` (what
  `meddx train DATA --model <head>` runs) with the default `TrainConfig` (16 uniform frames, 64 px), then the
  RUN's `SequenceClassifier` on the held-out videos (what `meddx evaluate` runs);
- reference 1, per-frame 2D CNN with probabilities averaged per video (the POCOVID-Net approach): meddx's
  default `cnn` (`meddx.train.fit.train`, default recipe) trained on the same 16 frames of every training
  video, each frame labelled with its video's label; a video's probability = mean over its 16 frames;
- reference 2, majority class: the training fold's class frequencies as every held-out video's probabilities.

Reported: macro one-vs-rest AUC of the pooled out-of-fold probabilities (69 videos) with a 95% bootstrap CI
resampling whole sources (1000 resamples), argmax accuracy, per-class AUC, training minutes; and the reading
cost: decoding + preprocessing the 69 videos through the old full-decode path vs the sampled-decode path
(cold, then from the on-disk cache), against the training time.

Run:  python benchmarks/sequence_pocus.py [--folds 4] [--max-minutes M] [--epochs N] [--heads lstm tcn ...]
      python benchmarks/sequence_pocus.py --only-fold 0 --heads lstm --no-reference   (time one fold)
Writes benchmarks/results/sequence_pocus.json. The cache lives in a temporary folder (MEDDX_CACHE) so the
cold read is really cold and the user's cache is untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_info, parser, print_header, table, write_results  # noqa: E402

MANIFEST = SHARED_DATA / "pocus" / "manifest.csv"
HEADS = ("lstm", "tcn", "transformer")
INNER_VAL_FRACTION = 0.25
N_BOOT = 1000


# -- reading ----------------------------------------------------------------------------------------------

def reading_costs(ds: Any, prep: Any, frames: int, reference: bool) -> dict[str, Any]:
    """Seconds to turn the videos into model input: full decode (before), sampled decode cold, cached."""
    from meddx.io import read_image
    from meddx.io.video import read_frames, read_frames_at
    from meddx.data.sequences import sample_frames
    from meddx.transforms.frames import read_study, sequence_input

    out: dict[str, Any] = {"n_videos": len(ds.items), "frames": frames, "frame_size": int(prep.image_size[0])}
    pick = lambda n: sample_frames(n, frames)  # noqa: E731
    if reference:
        t = time.perf_counter()
        for p in ds.items:
            read_frames(p)
        out["decode_full_s"] = time.perf_counter() - t
        t = time.perf_counter()
        full = [sequence_input(read_image(p), prep, frames, cache=False)[0] for p in ds.items]
        out["input_full_decode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for p in ds.items:
        read_frames_at(p, pick)
    out["decode_sampled_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cold = [sequence_input(read_study(p), prep, frames)[0] for p in ds.items]  # fills the cache
    out["input_sampled_cold_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cached = [sequence_input(read_study(p), prep, frames)[0] for p in ds.items]
    out["input_cached_s"] = time.perf_counter() - t
    out["cached_equals_cold"] = all(np.array_equal(a, b) for a, b in zip(cold, cached))
    if reference:
        out["sampled_equals_full_decode"] = all(np.array_equal(a, b) for a, b in zip(full, cold))
    return out


def inner_splits(sub: Any, seed: int) -> np.ndarray:
    """train/val per training-fold video: 25% of the sources as validation, drawn with `seed` (the next seeds
    only when a draw leaves one class in validation; on the full data seed 0 suits every fold)."""
    from meddx.data.splits import assign_splits

    for s in range(seed, seed + 50):
        splits = assign_splits(sub, INNER_VAL_FRACTION, 0.0, s)
        if all(len(np.unique(sub.labels[splits == k])) >= 2 for k in ("train", "val")):
            return splits
    raise RuntimeError("no inner split with two classes in validation")


# -- methods ----------------------------------------------------------------------------------------------

def _probs_of_run(run_dir: Path, paths: list[str]) -> np.ndarray:
    """Held-out probabilities through the RUN's predictor, as `meddx evaluate` computes them."""
    from meddx.infer import load
    from meddx.models.outputs import logits_to_probs
    from meddx.transforms.frames import read_study

    predictor = load(run_dir)
    x = np.concatenate([predictor.frames_of(read_study(p))[0] for p in paths])
    return logits_to_probs(predictor.predict_logits(x, batch_size=16), predictor.task)


def train_head(head: str, sub: Any, test_paths: list[str], work: Path, args: Any) -> tuple[np.ndarray, dict]:
    from meddx.train.config import TrainConfig
    from meddx.train.sequence import train_sequence_classifier

    lines: list[str] = []
    cfg = TrainConfig(model=head, seed=args.seed, val_fraction=INNER_VAL_FRACTION, test_fraction=0.0,
                      epochs=args.epochs, max_minutes=args.max_minutes, **args.overrides)
    t0 = time.perf_counter()
    info = train_sequence_classifier(sub, work / head, cfg, overwrite=True, log=lines.append, verbose=0)
    wall = time.perf_counter() - t0
    probs = _probs_of_run(work / head, test_paths)
    read = next((float(m.group(1)) for s in lines if (m := re.search(r"read \d+ studies in (\d+) s", s))), None)
    return probs, {"train_s": info["training_seconds"], "wall_s": wall, "read_s": read,
                   "epochs_run": info["epochs_run"], "epochs_planned": info["config"]["epochs"],
                   "best_epoch": info["best_epoch"], "val_auc": info["val_metrics"].get("auc")}


def train_frame_cnn(sub: Any, frames_of: dict[str, np.ndarray], test_paths: list[str], work: Path,
                    args: Any) -> tuple[np.ndarray, dict]:
    """meddx's default `cnn` on single frames labelled with their video's label; video probability = mean."""
    from meddx.data.datasets import Dataset
    from meddx.infer import load
    from meddx.models.outputs import logits_to_probs
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    x = np.concatenate([frames_of[p] for p in sub.items])
    k = len(frames_of[sub.items[0]])
    fds = Dataset.from_arrays(x, np.repeat(sub.labels, k), class_names=sub.class_names,
                              patient_ids=np.repeat(sub.patient_ids, k), splits=np.repeat(sub.splits, k),
                              source="pocus-frames")
    cfg = TrainConfig(model="cnn", seed=args.seed, intensity="minmax", epochs=args.epochs,
                      max_minutes=args.max_minutes)
    t0 = time.perf_counter()
    info = train(fds, work / "cnn_frames", cfg, overwrite=True, log=lambda s: None, verbose=0)
    wall = time.perf_counter() - t0
    predictor = load(work / "cnn_frames")
    probs = []
    for p in test_paths:
        logits = predictor.predict_logits(predictor.preprocessing.batch(frames_of[p]), batch_size=64)
        probs.append(logits_to_probs(logits, predictor.task).mean(axis=0))
    return np.asarray(probs), {"train_s": info["training_seconds"], "wall_s": wall, "epochs_run": info["epochs_run"],
                               "epochs_planned": info["config"]["epochs"], "best_epoch": info["best_epoch"],
                               "val_auc": info["val_metrics"].get("auc"), "n_train_frames": int(len(x))}


# -- metrics ----------------------------------------------------------------------------------------------

def summarise(y: np.ndarray, probs: np.ndarray, groups: np.ndarray, names: list[str]) -> dict[str, Any]:
    from meddx.evaluate.classification import bootstrap_ci, macro_auc_ovr, per_class_auc_ovr

    lo, hi = bootstrap_ci(macro_auc_ovr, y, probs, n_boot=N_BOOT, seed=0, groups=groups)
    per = per_class_auc_ovr(y, probs)
    return {"macro_auc": float(macro_auc_ovr(y, probs)), "auc_ci95_source_bootstrap": [lo, hi],
            "accuracy": float(np.mean(probs.argmax(axis=1) == y)),
            "per_class_auc": {c: float(v) for c, v in zip(names, per)}}


def main() -> None:
    ap = parser(__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heads", nargs="+", default=list(HEADS))
    ap.add_argument("--epochs", type=int, default=None, help="cap epochs (default: TrainConfig's auto epochs)")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget per training")
    ap.add_argument("--only-fold", type=int, default=None, help="run one fold only (timing)")
    ap.add_argument("--no-reference", action="store_true", help="skip the per-frame CNN (timing runs)")
    ap.add_argument("--no-decode-reference", action="store_true", help="skip the full-decode reading reference")
    ap.add_argument("--name", default="sequence_pocus", help="results file name (without .json)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="TrainConfig fields for the sequence heads (JSON values), e.g. channels=1 frames=8")
    args = ap.parse_args()
    args.overrides = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if args.quick:
        args.folds, args.epochs, args.heads = 2, 1, args.heads[:1]
    info = machine_info()
    print_header("POCUS videos: sequence heads vs per-frame CNN averaging (source-grouped CV)", info)
    if not MANIFEST.is_file():
        print(f"skipped: {MANIFEST} is absent")
        return

    cache = tempfile.TemporaryDirectory(prefix="meddx_pocus_cache_")
    os.environ["MEDDX_CACHE"] = cache.name
    from meddx.data.datasets import load_dataset
    from meddx.data.splits import kfold_splits
    from meddx.train.config import TrainConfig
    from meddx.train.sequence import sequence_preprocessing
    from meddx.transforms.frames import read_study, sequence_input

    t_start = time.perf_counter()
    ds = load_dataset(MANIFEST)
    if args.quick:  # two videos per source at most: a smoke run
        keep = np.concatenate([np.flatnonzero(ds.patient_ids == g)[:2] for g in np.unique(ds.patient_ids)])
        ds = ds.subset(np.sort(keep))
    defaults = TrainConfig(model="lstm")
    prep = sequence_preprocessing(ds, defaults)
    print(f"{len(ds)} videos, {len(set(ds.patient_ids))} sources, classes {ds.class_names} "
          f"{np.bincount(ds.labels).tolist()}; frames {defaults.frames} x {prep.image_size[0]} px x "
          f"{prep.channels} ch", flush=True)

    reading = reading_costs(ds, prep, defaults.frames, reference=not args.no_decode_reference)
    print("reading: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in reading.items()), flush=True)
    frames_of = {p: sequence_input(read_study(p), prep, defaults.frames)[0] for p in ds.items}  # from the cache

    folds = kfold_splits(ds, args.folds, seed=args.seed)
    methods = [*args.heads] + ([] if args.no_reference else ["cnn_frames_mean"]) + ["majority"]
    oof = {m: np.full((len(ds), ds.n_classes), np.nan) for m in methods}
    per_fold: list[dict[str, Any]] = []
    work_root = Path(tempfile.mkdtemp(prefix="meddx_pocus_runs_"))
    for f, (tr, te) in enumerate(folds):
        if args.only_fold is not None and f != args.only_fold:
            continue
        sub = ds.subset(tr)
        sub.splits = inner_splits(sub, args.seed)
        test_paths = [ds.items[i] for i in te]
        fold = {"fold": f, "test_sources": sorted(set(ds.patient_ids[te].tolist())),
                "test_counts": np.bincount(ds.labels[te], minlength=ds.n_classes).tolist(),
                "val_sources": sorted(set(sub.patient_ids[sub.splits == "val"].tolist())), "methods": {}}
        print(f"fold {f}: test {fold['test_sources']} {fold['test_counts']}, val {fold['val_sources']}", flush=True)
        for m in methods:
            if m == "majority":
                prior = np.bincount(ds.labels[tr], minlength=ds.n_classes) / len(tr)
                probs, stats = np.tile(prior, (len(te), 1)), {}
            elif m == "cnn_frames_mean":
                probs, stats = train_frame_cnn(sub, frames_of, test_paths, work_root / f"fold{f}", args)
            else:
                probs, stats = train_head(m, sub, test_paths, work_root / f"fold{f}", args)
            oof[m][te] = probs
            fold["methods"][m] = stats
            if stats:
                print(f"  {m}: {stats['train_s']:.0f} s training ({stats['epochs_run']}/{stats['epochs_planned']} "
                      f"epochs, best {stats['best_epoch']}, val AUC {stats['val_auc']}), wall {stats['wall_s']:.0f} s",
                      flush=True)
        per_fold.append(fold)

    done = np.flatnonzero(~np.isnan(oof[methods[0]][:, 0]))
    results: dict[str, Any] = {}
    rows = []
    for m in methods:
        s = summarise(ds.labels[done], oof[m][done], ds.patient_ids[done], ds.class_names)
        train_s = [fd["methods"][m]["train_s"] for fd in per_fold if fd["methods"].get(m)]
        s["train_minutes_total"] = sum(train_s) / 60 if train_s else None
        results[m] = s
        rows.append({"method": m, "macro AUC": s["macro_auc"],
                     "95% CI (source bootstrap)": "[{:.2f}, {:.2f}]".format(*s["auc_ci95_source_bootstrap"]),
                     "accuracy": s["accuracy"], **{f"AUC {c}": v for c, v in s["per_class_auc"].items()},
                     "train min": s["train_minutes_total"]})
    heads_done = [m for m in args.heads if m in results]
    best = max(heads_done, key=lambda m: results[m]["macro_auc"]) if heads_done else None
    ref = results.get("cnn_frames_mean", {}).get("macro_auc")
    verdict = {"best_head": best, "best_head_auc": results[best]["macro_auc"] if best else None,
               "target_auc": 0.85, "meets_auc_target": bool(best and results[best]["macro_auc"] >= 0.85),
               "beats_frame_averaging": None if ref is None or best is None else bool(results[best]["macro_auc"] > ref)}
    read_rows = [{"path": "full decode (before), then sample + preprocess",
                  "seconds": reading.get("input_full_decode_s"), "decode only s": reading.get("decode_full_s")},
                 {"path": "sampled decode, cold (fills the cache)", "seconds": reading["input_sampled_cold_s"],
                  "decode only s": reading["decode_sampled_s"]},
                 {"path": "cached (second training / evaluate)", "seconds": reading["input_cached_s"],
                  "decode only s": 0.0}]
    train_total = sum(fd["methods"][m]["train_s"] for fd in per_fold for m in args.heads if fd["methods"].get(m))
    t1 = table(rows)
    t2 = table(read_rows)
    print()
    print(f"{len(done)} videos predicted out of fold ({args.folds}-fold by source"
          + (f", fold {args.only_fold} only" if args.only_fold is not None else "") + ")")
    print(t1)
    print()
    print(t2)
    print(f"sequence-head training {train_total / 60:.1f} min in all vs reading "
          f"{reading['input_sampled_cold_s']:.0f} s cold / {reading['input_cached_s']:.1f} s cached")
    print(f"best head {best}: AUC {verdict['best_head_auc']}, target 0.85 met: {verdict['meets_auc_target']}, "
          f"beats frame averaging: {verdict['beats_frame_averaging']}")
    total = time.perf_counter() - t_start
    print(f"total {total / 60:.1f} min")
    settings = {"head_config_overrides": args.overrides, "folds": args.folds, "only_fold": args.only_fold,
                "seed": args.seed, "epochs": args.epochs,
                "max_minutes_per_training": args.max_minutes, "inner_val_fraction": INNER_VAL_FRACTION,
                "frames": defaults.frames, "frame_size": int(prep.image_size[0]), "channels": prep.channels,
                "bootstrap": N_BOOT}
    write_results(args, args.name, info,
                  {"settings": settings, "reading": reading, "results": results, "verdict": verdict,
                   "folds": per_fold, "total_minutes": total / 60, "n_predicted": int(len(done)),
                   "oof_probabilities": {m: oof[m].tolist() for m in methods}, "labels": ds.labels.tolist(),
                   "sources": ds.patient_ids.tolist(), "items": list(ds.items)},
                  {"results": t1, "reading": t2})
    cache.cleanup()
    shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    main()
