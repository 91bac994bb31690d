"""LGG FLAIR-abnormality segmentation: 2D U-Net, patient-grouped cross-validation, held-out patients.

Trains `meddx.train.segmentation.train_segmenter` on ../shared/data/lgg + lgg_more (35 patients, 1101 slices;
`--data lgg` for the first 10) and scores held-out patients: patient Dice (each patient's slices stacked into one
volume, the figure Buda et al. 2019 report), lesion-slice Dice, HD95, lesion sensitivity, false positives.
Reference measured side by side: an all-background predictor and an Otsu threshold of the FLAIR channel inside
the brain (a classical baseline). Prints a table and writes JSON.

    python benchmarks/segmentation_lgg.py --folds 5      # every patient held out once, meddx train's defaults
    python benchmarks/segmentation_lgg.py [--folds 5] [--epochs E] [--size 96] [--select-channels 1] ...

Recipe flags left unset take `meddx train --task segmentation`'s defaults, so the plain command measures the
default recipe. With --folds K the patients are split K ways by patient (stratified group k-fold, --split-seed 0);
each fold trains a fresh U-Net on the other patients (keeping the last epoch; --kfold-val holds one out to pick
it) and is scored on its own held-out patients; the table pools the held-out slices of all folds.

Until 2026-12-02 the benchmark read only the 10 `lgg/` patients and its own defaults (96 px, FLAIR only, batch 8,
learning rate 3e-3, 25 epochs); the notes below are about those runs (flags as given then).
Measured 2026-11-24 (shared 2-core CPU): the test patients (5396, 6188) carry abnormality that is
barely FLAIR-hyperintense (the Otsu FLAIR reference scores Dice 0.003 on their lesion slices vs
0.557 on the validation patients'), and a U-Net trained on the 6 training patients does not
transfer to them: lesion-slice Dice 0.04 with all 3 channels, 0.23 with FLAIR only (the default).
Measured 2026-11-25, idle: `--folds 5 --intensity zscore:foreground` pools to 0.44 over all 69
lesion slices (Otsu 0.33; 4.0-4.8 min per fold); per patient 0.48-0.87 where the lesion is +0.6 to
+1.9 head sd above the head on FLAIR, 0.00-0.04 for the three patients at +0.2 sd (5396, 5397, 6188).
Same folds, 2026-11-25: `--seed 1` 0.44; `--seg-loss tversky_bce` 0.40; `--select-channels 0,1,2
--intensity zscore:foreground,channel --channel-dropout 0.5` 0.35 (JSON in benchmarks/results).
`--size 128` 0.47 (6.8-7.8 min per fold); `--size 128 --lesion-fade 0.5` 0.54, the best measured (5396 0.04 ->
0.27, 5397 0.11 -> 0.41; 0.35 FP per slice; 7.8-8.7 min per fold); `--lesion-fade 0.5` at 96 px 0.37.
Adding `--seg-loss lesion_dice_bce` (128 px, fade 0.5): 0.59, but 1.32 FP per slice (Dice over all slices
0.44); with `--batch 4` the default loss collapsed fold 1 to all-background.
`--size 256 --patch 128 --lesion-fade 0.5` (128 px crops at full resolution, whole 256 px slices predicted):
0.61, the best lesion-slice figure (6188 0.17, 5396 0.44), 1.59 FP per slice (all slices 0.52), 7.6-8.6 min per fold.
Same with `--epochs 40 --max-minutes 14.5` (10.8-14.8 min per fold): 0.57, 0.78 FP per slice (all slices 0.66);
the faint patients fall back (5396 0.19, 5397 0.36). `--rescore --tta` scores trained folds again with flip
test-time augmentation: 0.61 -> 0.61 (25 epochs), 0.57 -> 0.56 (40).
Patches with `--seg-loss lesion_dice_bce`: 0.57 at 2.73 FP per slice (same sensitivity, worse elsewhere).
Measured 2026-11-30 (2-core Intel Xeon, idle): all three channels with the patch recipe, `--size 256 --patch 128
--lesion-fade 0.5 --select-channels 0,1,2 --intensity zscore:foreground,channel`: 0.661 (seed 0) / 0.639 (seed 1),
the best measured, 1.2 FP per slice, 2.8-3.5 min per fold; the faint patients 0.23-0.47; `--base 24` 0.52.
Measured 2026-11-30 (same box): `--stack-min-fraction 0.25` (each patient's slices stacked, 3D components under
a quarter of the largest dropped) on those runs: 0.682 / 0.660 (seeds 0 / 1), 0.27 / 0.31 FP per slice, all
slices 0.785 / 0.755 (`--rescore --stack-min-fraction 0.25` scores trained folds again); the fraction was chosen
on seed 0's folds. `--seg-loss batch_dice_bce` folds 0, 1, 3: 0.617, 0.753, 0.142 (per-sample Dice 0.659,
0.833, 0.354); `--lesion-fade 0.8` fold 0 0.472 (0.641 at 0.5); `--patch 192` folds 0, 3: 0.603, 0.230.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDDX_SHARED_DATA", ROOT.parent / "shared" / "data"))
LGG = DATA / "lgg"


def otsu_baseline(ds, idx):
    """Otsu threshold of the FLAIR channel, largest component: a training-free reference."""
    from skimage.filters import threshold_otsu

    from meddx.evaluate.segmentation import segmentation_metrics
    from meddx.io import read_image
    from meddx.transforms.post import postprocess_mask

    preds, truths = [], []
    for i in idx:
        flair = read_image(ds.items[i]).array[..., 1].astype(np.float32)
        brain = flair[flair > 0]
        t = threshold_otsu(brain) if brain.size else 1
        # the hyperintense tail: threshold at Otsu of the brain voxels above the first Otsu level
        upper = brain[brain > t]
        t2 = threshold_otsu(upper) if upper.size > 10 else t
        preds.append(postprocess_mask(flair > t2, min_size=20, keep_largest=1))
        truths.append(read_image(ds.masks[i]).array > 0)
    return segmentation_metrics(preds, truths)


def context_stack_folder(dest: Path) -> Path:
    """LGG rewritten for 2.5D input: each slice becomes (FLAIR of slice - 1, slice, slice + 1) of its own
    patient (edge slices repeat themselves), masks copied; written outside the repo, used in place of LGG."""
    import shutil

    from PIL import Image as PILImage

    from meddx.data.lgg import find_pairs

    by_patient: dict[str, list[tuple[Path, Path]]] = {}
    for img, mask, patient in find_pairs(LGG):
        by_patient.setdefault(patient, []).append((img, mask))
    for patient, pairs in by_patient.items():
        flair = [np.asarray(PILImage.open(img))[..., 1] for img, _ in pairs]  # naturally sorted = slice order
        out = dest / patient
        out.mkdir(parents=True, exist_ok=True)
        for k, (img, mask) in enumerate(pairs):
            stack = np.stack([flair[max(k - 1, 0)], flair[k], flair[min(k + 1, len(pairs) - 1)]], axis=-1)
            PILImage.fromarray(stack).save(out / img.name)
            shutil.copyfile(mask, out / mask.name)
    return dest


def lgg_dataset(names: str):
    """The paired LGG folders named (comma-separated, under ../shared/data) as one segmentation Dataset, read
    through the manifest a user would write (`meddx.data.lgg.lgg_manifest`, in a temporary folder)."""
    import tempfile

    from meddx.data.datasets import load_dataset
    from meddx.data.lgg import lgg_manifest

    roots = [DATA / n.strip() for n in names.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="lgg_manifest_") as tmp:
        ds = load_dataset(lgg_manifest(roots, Path(tmp) / "lgg.csv"))
    ds.items = [str(Path(i).resolve()) for i in ds.items]
    ds.masks = [str(Path(m).resolve()) for m in ds.masks]
    ds.source = ",".join(str(r) for r in roots)  # the manifest is gone with its folder
    return ds


def patient_dice_summary(per_patient: dict[str, float], seed: int = 0, n_boot: int = 2000) -> dict:
    """Mean patient Dice over held-out patients with a 95 % bootstrap CI over patients."""
    v = np.asarray(list(per_patient.values()), dtype=float)
    if not len(v):
        return {"mean": None, "ci95": None, "n_patients": 0}
    rng = np.random.default_rng(seed)
    boots = rng.choice(v, size=(n_boot, len(v)), replace=True).mean(axis=1)
    return {"mean": float(v.mean()), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "median": float(np.median(v)), "n_patients": int(len(v)), "per_patient": dict(sorted(per_patient.items()))}


def lesion_flair_contrast(ds) -> dict[str, float]:
    """Per patient: mean over lesion slices of (lesion mean - head mean) / head sd on FLAIR, the head being
    the voxels above the slice's Otsu threshold outside the mask -- how visible the target is on FLAIR."""
    from skimage.filters import threshold_otsu

    from meddx.io import read_image

    per: dict[str, list[float]] = {}
    for i in range(len(ds)):
        mask = read_image(ds.masks[i]).array > 0
        if not mask.any():
            continue
        flair = read_image(ds.items[i]).array[..., 1].astype(np.float64)
        head = (flair > threshold_otsu(flair)) & ~mask
        per.setdefault(str(ds.patient_ids[i]), []).append(
            (flair[mask].mean() - flair[head].mean()) / max(flair[head].std(), 1e-6))
    return {p: float(np.mean(v)) for p, v in sorted(per.items())}


def main(argv=None) -> int:
    from meddx.train.config import SEG_LOSSES, TrainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "segmentation_lgg"),
                    help="run folders (models, per-fold evaluations; git-ignored)")
    ap.add_argument("--json-dir", default=str(ROOT / "benchmarks" / "results"),
                    help="where the summary JSON goes (segmentation_lgg.json / segmentation_lgg_kfold.json)")
    ap.add_argument("--data", default="lgg,lgg_more",
                    help="paired LGG folders under ../shared/data, comma-separated (lgg: 10 patients, lgg_more: 25)")
    # recipe flags: unset = meddx train's default (for LGG: the slice-stack recipe, SLICE_STACK_SEGMENTATION_DEFAULTS)
    ap.add_argument("--epochs", type=int, help="default: meddx's (12-25 by the number of training slices)")
    ap.add_argument("--size", type=int, help="training/prediction side (default: native up to 256)")
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--patch", "--patch-size", dest="patch", type=int,
                    help="train on random crops of this side of the --size images (half of the lesion slices' "
                         "crops centred on lesion); predict whole images; 0 = whole images (default: 128 at >= 256)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--seed", type=int, default=0, help="training seed (weights, shuffling, augmentation)")
    ap.add_argument("--split-seed", type=int, default=0,
                    help="k-fold: seed of the patient partition (kept apart from --seed so that training noise "
                         "can be measured on the same folds)")
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--select-channels",
                    help="input channels (0 pre-contrast, 1 FLAIR, 2 post-contrast), e.g. 1 for FLAIR only "
                         "(default: all three)")
    ap.add_argument("--intensity", help="default: zscore:foreground,channel")
    ap.add_argument("--augment", choices=["none", "flip", "light", "strong"])
    ap.add_argument("--seg-loss", choices=SEG_LOSSES)
    ap.add_argument("--channel-dropout", type=float,
                    help="zero one random input channel with this probability while training (multi-channel input)")
    ap.add_argument("--lesion-fade", type=float,
                    help="cut a training lesion's contrast to its surroundings by 0-90 %% with this probability "
                         "(default 0.5)")
    ap.add_argument("--patience", type=int,
                    help="early-stopping patience in epochs (with --kfold-val or the single split)")
    ap.add_argument("--folds", type=int, default=0,
                    help="k-fold by patient (every patient held out once); 0 = the default train/val/test split")
    ap.add_argument("--kfold-val", action="store_true",
                    help="k-fold: hold one training patient out to pick the best epoch (default: train on all the "
                         "fold's training patients and keep the last epoch; one small-lesion patient made a noisy "
                         "selector: fold 3 picked epoch 8 of 25, 10 false positives per image)")
    ap.add_argument("--context", action="store_true",
                    help="2.5D: the FLAIR of the slices above and below as two more channels (use with "
                         "--select-channels 0,1,2 --intensity zscore:foreground,channel)")
    ap.add_argument("--stack-min-fraction", type=float, default=None, metavar="F",
                    help="score with stack post-processing: per patient, drop 3D lesion components under F x the "
                         "largest (with --rescore, also for runs trained without it; 0 switches it off)")
    ap.add_argument("--save-probs", action="store_true",
                    help="k-fold: also write each fold's held-out probability maps (with and without flip TTA), "
                         "masks and patient IDs to foldK/probs.npz, for post-processing studies (--sweep)")
    ap.add_argument("--sweep", action="store_true",
                    help="k-fold: train nothing; score the saved probs.npz of every fold under a grid of "
                         "thresholds and stack post-processing fractions (patient Dice)")
    ap.add_argument("--pool-only", action="store_true",
                    help="k-fold: train nothing; pool the folds already scored under --out")
    ap.add_argument("--only-folds", default="", help="comma-separated fold numbers to run (quick experiments)")
    ap.add_argument("--tta", action="store_true",
                    help="score with flip test-time augmentation (the flips the model was trained with)")
    ap.add_argument("--rescore", action="store_true",
                    help="k-fold: train nothing; score the runs already trained under --out again (e.g. with "
                         "--tta; scores go to foldK/eval_tta with --tta, foldK/eval_stackF with "
                         "--stack-min-fraction F)")
    ap.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32",
                    help="keras dtype policy while training (mixed_bfloat16: ~1.5x faster steps on CPUs with AMX; "
                         "the U-Net's output layer stays float32)")
    ap.add_argument("--combine", default="", metavar="DIR,DIR",
                    help="k-fold: train nothing; patient Dice of several --save-probs runs (their --out folders) "
                         "and of their mean probabilities (an ensemble of their models)")
    args = ap.parse_args(argv)
    if args.precision != "float32":
        import keras

        keras.mixed_precision.set_global_policy(args.precision)
    missing = [n for n in args.data.split(",") if n.strip() and not (DATA / n.strip()).is_dir()]
    if missing:
        print(f"skip: {', '.join(str(DATA / n) for n in missing)} absent")
        return 0
    if args.context and args.data != "lgg":
        ap.error("--context is implemented for --data lgg only")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.json_dir).mkdir(parents=True, exist_ok=True)
    given = {"epochs": args.epochs, "batch_size": args.batch, "learning_rate": args.lr, "image_size": args.size,
             "augment": args.augment, "intensity": args.intensity, "patience": args.patience,
             "max_minutes": args.max_minutes, "channel_dropout": args.channel_dropout,
             "lesion_fade": args.lesion_fade, "seg_loss": args.seg_loss, "patch_size": args.patch,
             "stack_min_fraction": None if args.rescore else args.stack_min_fraction,
             "select_channels": [int(c) for c in args.select_channels.split(",")] if args.select_channels else None}
    cfg = TrainConfig(task="segmentation", model="unet", seed=args.seed, test_fraction=args.test_fraction
                      ).updated(given, source="benchmark flags")
    if args.sweep:
        return sweep(out, args.folds)
    if args.combine:
        return combine([Path(d) for d in args.combine.split(",")], args.folds or 5)
    if args.folds:
        only = [int(k) for k in args.only_folds.split(",") if k.strip()]
        return kfold(cfg, args, out, only)
    return single_split(cfg, args, out)


def _fmt(v) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def _table(rows) -> None:
    print(f"{'method':<22}{'Dice(lesion sl.)':>17}{'Dice(all)':>10}{'HD95 px':>9}{'les.sens':>9}{'FP/img':>8}")
    for r in rows:
        print(f"{r[0]:<22}" + "".join(f"{_fmt(v):>{w}}" for v, w in zip(r[1:], (17, 10, 9, 9, 8))))


def _train_and_test(ds, cfg, args, run_dir: Path, eval_dir: Path):
    """Train on ds's train split (val for checkpoint selection), score its test split; (metrics, info, seconds)."""
    from meddx.train.segmentation import train_segmenter

    t0 = time.monotonic()
    info = train_segmenter(ds, run_dir, cfg, overwrite=True, base_filters=args.base, depth=4, verbose=0,
                           log=lambda *a, **k: None)
    t_train = time.monotonic() - t0
    return _score(ds, args, run_dir, eval_dir), info, t_train


def _score(ds, args, run_dir: Path, eval_dir: Path) -> dict:
    """Test-split metrics of a trained RUN (flip test-time augmentation with --tta)."""
    from meddx.app.evaluate import evaluate_segmenter
    from meddx.infer import load

    # stack_min_fraction: e.g. rescoring a run trained without it (None: the RUN's own)
    segmenter = load(run_dir, tta=args.tta, stack_min_fraction=args.stack_min_fraction)
    return evaluate_segmenter(segmenter, ds, eval_dir, split="test", log=lambda *a, **k: None)


def single_split(cfg, args, out: Path) -> int:
    """The default patient-grouped train/val/test split (seed 0): train once, score the test patients."""
    from meddx.data.splits import assign_splits

    load0 = os.getloadavg()
    ds = lgg_dataset(args.data)
    m, info, t_train = _train_and_test(ds, cfg, args, out / "run", out / "eval")
    splits = assign_splits(ds, info["config"]["val_fraction"], cfg.test_fraction, cfg.seed)  # as training did
    test_idx = np.flatnonzero(splits == "test")
    ref = otsu_baseline(ds, test_idx)
    load1 = os.getloadavg()
    print(f"\nLGG test patients: {sorted(set(ds.patient_ids[test_idx]))}, {len(test_idx)} slices, "
          f"{m['n_lesion_cases']} with lesion")
    _table([
        ("unet (meddx)", m["dice_lesion_cases"], m["dice"], m["hd95"], m["lesion_sensitivity"], m["fp_per_image"]),
        ("otsu FLAIR baseline", ref["dice_lesion_cases"], ref["dice"], ref["hd95"], ref["lesion_sensitivity"],
         ref["fp_per_image"]),
        ("all background", 0.0, float(np.mean([c["truth_empty"] for c in m["per_case"]])), None, 0.0, 0.0),
    ])
    print(f"training {t_train / 60:.1f} min wall ({info['epochs_run']} epochs, best {info['best_epoch']}); "
          f"load average before {load0[0]:.2f}, after {load1[0]:.2f} on {os.cpu_count()} cores")
    result = {"unet": {k: m[k] for k in ("dice", "dice_lesion_cases", "iou", "hd95", "asd", "lesion_sensitivity",
                                         "fp_per_image", "n", "n_lesion_cases", "units", "dice_per_patient")},
              "otsu_baseline": {k: ref[k] for k in ("dice", "dice_lesion_cases", "hd95", "lesion_sensitivity",
                                                    "fp_per_image")},
              "train_wall_s": round(t_train, 1), "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"],
              "val_metrics": info["val_metrics"], "config": info["config"],
              "model_options": info["model_options"], "loadavg_before": load0, "loadavg_after": load1,
              "cpu_count": os.cpu_count(), "test_patients": sorted(set(ds.patient_ids[test_idx]))}
    dest = Path(args.json_dir) / "segmentation_lgg.json"
    dest.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {dest}")
    return 0


def kfold(cfg, args, out: Path, only: list[int]) -> int:
    """Every patient held out once: per fold a fresh U-Net (one training patient held out for checkpoint
    selection), scored on the fold's patients; lesion-slice Dice etc. pooled over all held-out slices."""
    from dataclasses import replace

    from meddx.data.lgg import paired_folder_dataset
    from meddx.data.splits import _groups, _holdout, _strata, kfold_splits

    load0 = os.getloadavg()
    base = lgg_dataset(args.data)
    if args.context:  # same cases, same order, same folds; only the pixels differ
        import tempfile

        ctx = paired_folder_dataset(context_stack_folder(Path(tempfile.mkdtemp(prefix="lgg25d_"))))
        assert [Path(p).name for p in ctx.items] == [Path(p).name for p in base.items]
        base = replace(ctx, labels=base.labels, patient_ids=base.patient_ids)
    cases, ref_cases, folds, trained_config, per_patient = [], [], [], None, {}
    for k, (tr, te) in enumerate(kfold_splits(base, k=args.folds, seed=args.split_seed)):
        if only and k not in only:
            continue
        splits = np.full(len(base), "train", dtype="<U8")
        splits[te] = "test"
        if args.kfold_val:  # one training patient held out for checkpoint selection
            splits[_holdout(_strata(base), _groups(base), tr, 1.0 / (len(set(base.patient_ids[tr]))), k)] = "val"
        ds = replace(base, splits=splits)
        fold_cfg = replace(cfg, val_fraction=0.15 if args.kfold_val else 0.0)
        eval_name = "eval" + ("_tta" if args.tta else "") + (
            f"_stack{args.stack_min_fraction:g}" if args.rescore and args.stack_min_fraction is not None else "")
        run_dir, eval_dir = out / f"fold{k}" / "run", out / f"fold{k}" / eval_name
        if args.rescore:  # a fold trained earlier, scored again (e.g. with --tta)
            m = _score(ds, args, run_dir, eval_dir)
            info = json.loads((run_dir / "run.json").read_text())
            t_train = float(info["training_seconds"])
        elif args.pool_only:  # a fold trained and scored earlier (e.g. in another --only-folds batch)
            if not (eval_dir / "metrics.json").is_file():
                print(f"error: --pool-only: fold {k} has no {eval_dir / 'metrics.json'}")
                return 1
            m = json.loads((eval_dir / "metrics.json").read_text())
            info = json.loads((run_dir / "run.json").read_text())
            t_train = float(info["training_seconds"])
        else:
            m, info, t_train = _train_and_test(ds, fold_cfg, args, run_dir, eval_dir)
        if args.save_probs:
            save_probs(ds, te, run_dir, out / f"fold{k}" / "probs.npz")
        trained_config = trained_config or info["config"]
        ref = otsu_baseline(ds, te)
        cases += m["per_case"]
        per_patient.update(m.get("dice_per_patient") or {})
        ref_cases += [{**c, "patient_id": str(base.patient_ids[i])} for c, i in zip(ref["per_case"], te)]
        fold = {"fold": k, "test_patients": sorted(set(base.patient_ids[te])),
                "val_patients": sorted(set(base.patient_ids[splits == "val"])),
                "dice_lesion_cases": m["dice_lesion_cases"], "dice": m["dice"], "hd95": m["hd95"],
                "lesion_sensitivity": m["lesion_sensitivity"], "fp_per_image": m["fp_per_image"],
                "dice_per_patient": m.get("dice_per_patient"), "otsu_dice_lesion_cases": ref["dice_lesion_cases"],
                "train_wall_s": round(t_train, 1), "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"],
                "val_dice_lesion": info["val_metrics"]["dice_lesion"]}  # None without --kfold-val
        folds.append(fold)
        print(f"fold {k}: test {fold['test_patients']} val {fold['val_patients']}: lesion-slice Dice "
              f"{_fmt(m['dice_lesion_cases'])} (Otsu {_fmt(ref['dice_lesion_cases'])}), HD95 {_fmt(m['hd95'])} px, "
              f"sensitivity {_fmt(m['lesion_sensitivity'])}; trained {t_train / 60:.1f} min "
              f"({info['epochs_run']} epochs, best {info['best_epoch']}); load {os.getloadavg()[0]:.1f}", flush=True)
    pooled, ref_pooled = _pool(cases), _pool(ref_cases)
    pooled["patient_dice"] = patient_dice_summary(per_patient)
    load1 = os.getloadavg()
    print(f"\nLGG {args.folds}-fold by patient, folds run {[f['fold'] for f in folds]}: {pooled['n']} held-out slices, "
          f"{pooled['n_lesion_cases']} with lesion")
    _table([("unet (meddx)", *[pooled[k] for k in ("dice_lesion_cases", "dice", "hd95", "lesion_sensitivity",
                                                   "fp_per_image")]),
            ("otsu FLAIR baseline", *[ref_pooled[k] for k in ("dice_lesion_cases", "dice", "hd95",
                                                              "lesion_sensitivity", "fp_per_image")]),
            ("all background", 0.0, float(np.mean([c["truth_empty"] for c in cases])), None, 0.0, 0.0)])
    pd = pooled["patient_dice"]
    if pd["mean"] is not None:
        print(f"patient Dice (each patient's slices as one volume, mean over {pd['n_patients']} held-out patients): "
              f"{pd['mean']:.3f} [95 % CI {pd['ci95'][0]:.3f}, {pd['ci95'][1]:.3f}], median {pd['median']:.3f}")
        print("  " + ", ".join(f"{p[5:12]} {d:.2f}" for p, d in pd["per_patient"].items()))
    contrast = lesion_flair_contrast(base)
    print("per held-out patient: lesion-slice Dice (lesion FLAIR contrast, sd above the head)")
    print("  " + ", ".join(f"{p[8:12]} {d:.2f} ({contrast[p]:+.2f})" for p, d in
                            pooled["dice_lesion_per_patient"].items()))
    pooled["lesion_flair_contrast"] = contrast
    print(f"training per fold: max {max(f['train_wall_s'] for f in folds) / 60:.1f} min, total "
          f"{sum(f['train_wall_s'] for f in folds) / 60:.1f} min; load average before {load0[0]:.2f}, "
          f"after {load1[0]:.2f} on {os.cpu_count()} cores")
    # runs scored again (--rescore, --pool-only) report the settings they were trained with, not this call's
    config = {k: v for k, v in trained_config.items() if k in cfg.to_dict()} if trained_config else cfg.to_dict()
    if args.stack_min_fraction is not None:
        config["stack_min_fraction"] = float(args.stack_min_fraction)
    result = {"protocol": f"{args.folds}-fold by patient", "unet": pooled, "otsu_baseline": ref_pooled,
              "folds": folds, "config": {**config, "base_filters": args.base, "split_seed": args.split_seed,
                                         "tta": args.tta, "precision": args.precision},
              "loadavg_before": load0, "loadavg_after": load1, "cpu_count": os.cpu_count()}
    name = "segmentation_lgg_kfold.json" if not only else f"segmentation_lgg_kfold_{'_'.join(map(str, only))}.json"
    dest = Path(args.json_dir) / name
    dest.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {dest}")
    return 0


def save_probs(ds, idx, run_dir: Path, dest: Path) -> None:
    """Held-out probability maps of one fold at the native grid, plain and with flip TTA, beside the truths."""
    from meddx.infer import load
    from meddx.train.seg_data import read_pair

    plain, flipped = load(run_dir), load(run_dir, tta=True)
    probs, probs_tta, truths = [], [], []
    for i in idx:
        x, truth, _ = read_pair(ds.items[i], ds.masks[i], plain.preprocessing, native=plain.sliding)
        probs.append(plain.segment_array(x, truth.shape)[0].astype(np.float16))
        probs_tta.append(flipped.segment_array(x, truth.shape)[0].astype(np.float16))
        truths.append(truth.astype(bool))
    np.savez_compressed(dest, probs=np.stack(probs), probs_tta=np.stack(probs_tta), truths=np.stack(truths),
                        patients=np.asarray([str(p) for p in ds.patient_ids[idx]]),
                        names=np.asarray([str(ds.items[i]) for i in idx]))


def _patient_volumes(saved) -> list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per fold: patient -> (probabilities, TTA probabilities, truth) stacked in slice order."""
    from meddx.data.lgg import natural_key

    folds = []
    for f in saved:
        vols = {}
        for patient in sorted(set(f["patients"].tolist())):
            idx = sorted(np.flatnonzero(f["patients"] == patient), key=lambda i: natural_key(Path(str(f["names"][i]))))
            vols[patient] = (f["probs"][idx].astype(np.float32), f["probs_tta"][idx].astype(np.float32),
                             f["truths"][idx])
        folds.append(vols)
    return folds


def _variant_mask(prob: np.ndarray, variant: tuple) -> np.ndarray:
    """One post-processing variant of a patient's probability volume: ("threshold", t, fraction) = per-slice
    threshold, components under 10 px dropped, 3D components under fraction x the largest dropped;
    ("hysteresis", low, high, fraction) = 3D components above low that reach high."""
    from skimage.filters import apply_hysteresis_threshold

    from meddx.transforms.post import drop_minor_components, postprocess_mask

    if variant[0] == "threshold":
        _, t, frac = variant
        mask = np.stack([postprocess_mask(p >= t, 10) for p in prob])
    else:
        _, low, high, frac = variant
        mask = apply_hysteresis_threshold(prob, low, high)
    return drop_minor_components(mask, frac)


def _mean_dice(per_fold: list[dict[str, float]], leave_out: int | None = None) -> float:
    """Mean patient Dice over the folds' patients (all folds, or all but fold `leave_out`)."""
    return float(np.mean([d for j, f in enumerate(per_fold) if j != leave_out for d in f.values()]))


def sweep(out: Path, folds: int) -> int:
    """Patient Dice of the saved held-out probabilities of every fold under post-processing variants; the
    variant picked on the other folds (leave-one-fold-out) gives an honest figure for choosing one."""
    from meddx.transforms.post import dice_np

    saved = [np.load(out / f"fold{k}" / "probs.npz") for k in range(folds) if (out / f"fold{k}" / "probs.npz").is_file()]
    print(f"{len(saved)} folds with saved probabilities under {out}")
    if not saved:
        print(f"error: --sweep: no foldK/probs.npz under {out} (train with --folds K --save-probs first)")
        return 1
    vols = _patient_volumes(saved)
    fractions = (0.0, 0.25, 0.5, 0.99)
    variants = [("threshold", t, f) for t in (0.3, 0.4, 0.5, 0.6, 0.7) for f in fractions]
    variants += [("hysteresis", lo, hi, f) for lo in (0.3, 0.4) for hi in (0.7, 0.9) for f in fractions]
    scores: dict[tuple, list[dict[str, float]]] = {}  # (tta, *variant) -> per fold {patient: Dice}
    for tta in (False, True):
        for v in variants:
            key = (tta, *v)
            scores[key] = [{p: dice_np(_variant_mask(pt if tta else pr, v), t) for p, (pr, pt, t) in fold.items()}
                           for fold in vols]
            median = np.median([d for f in scores[key] for d in f.values()])
            print(f"{'tta ' if tta else 'plain'} {' '.join(map(str, v)):<28} patient Dice "
                  f"{_mean_dice(scores[key]):.3f} (median {median:.3f})", flush=True)
    best = max(scores, key=lambda key: _mean_dice(scores[key]))
    nested = {}
    for k in range(len(vols)):  # pick on the other folds, score on this one
        pick = max(scores, key=lambda key: _mean_dice(scores[key], leave_out=k))
        nested.update(scores[pick][k])
        print(f"fold {k}: picked on the others {pick}")
    default = (False, "threshold", 0.5, 0.25)
    summary = {"default": _mean_dice(scores[default]), "best_in_sample": [list(best), _mean_dice(scores[best])],
               "nested_leave_one_fold_out": float(np.mean(list(nested.values()))),
               "scores": {" ".join(map(str, k)): [d for f in v for d in f.values()] for k, v in scores.items()}}
    print(f"default {summary['default']:.3f}; best in sample {best} {summary['best_in_sample'][1]:.3f}; "
          f"picked on the other folds {summary['nested_leave_one_fold_out']:.3f}")
    (out / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def combine(dirs: list[Path], folds: int) -> int:
    """Patient Dice of each k-fold run's saved held-out probabilities (--save-probs) and of their mean (an
    ensemble of the runs' models), with the default post-processing, on the folds every run has saved."""
    from meddx.transforms.post import dice_np

    ks = [k for k in range(folds) if all((d / f"fold{k}" / "probs.npz").is_file() for d in dirs)]
    if not ks:
        print(f"error: --combine: no fold has probs.npz under every one of {', '.join(map(str, dirs))}")
        return 1
    runs = [_patient_volumes([np.load(d / f"fold{k}" / "probs.npz") for k in ks]) for d in dirs]
    variant = ("threshold", 0.5, 0.25)  # the default post-processing
    rows: dict[str, dict[str, float]] = {}
    for name, pick in [(str(d), lambda vs, j=j: vs[j]) for j, d in enumerate(dirs)] + [
            ("mean of the runs", lambda vs: np.mean(vs, axis=0))]:
        rows[name] = {p: dice_np(_variant_mask(pick([r[i][p][0] for r in runs]), variant), runs[0][i][p][2])
                      for i in range(len(ks)) for p in runs[0][i]}
    n = len(next(iter(rows.values())))
    print(f"folds {ks} ({n} patients), default post-processing, patient Dice:")
    for name, per in rows.items():
        v = np.asarray(list(per.values()))
        print(f"  {name:<40} mean {v.mean():.3f} median {np.median(v):.3f} (n {len(v)})")
    out = {"folds": ks, "variant": list(variant), "per_patient": rows,
           "mean": {name: float(np.mean(list(per.values()))) for name, per in rows.items()}}
    (dirs[0] / "combine.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _pool(cases: list[dict]) -> dict:
    """Pooled held-out figures from per-case rows of several folds, plus lesion-slice Dice per patient."""
    from meddx.evaluate.segmentation import summarise_cases

    per_patient: dict[str, list[float]] = {}
    for c in cases:
        if not c["truth_empty"]:
            per_patient.setdefault(c.get("patient_id", "?"), []).append(c["dice"])
    return {**summarise_cases(cases),
            "dice_lesion_per_patient": {p: float(np.mean(v)) for p, v in sorted(per_patient.items())}}

if __name__ == "__main__":
    sys.exit(main())
