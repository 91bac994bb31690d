"""LGG FLAIR-abnormality segmentation: 2D U-Net, patient-grouped splits, held-out test patients.

Trains `meddx.train.segmentation.train_segmenter` on ../shared/data/lgg (10 patients, 218 slices)
and evaluates on the test patients. Reference measured side by side: an all-background
predictor (Dice on lesion slices = 0) and an Otsu threshold of the FLAIR channel inside the
brain (a classical baseline). Prints a table and writes JSON.

    python benchmarks/segmentation_lgg.py [--out DIR] [--epochs 25] [--size 96] [--select-channels 1]

Measured 2026-11-24 (shared 2-core CPU): the test patients (5396, 6188) carry abnormality that is
barely FLAIR-hyperintense (the Otsu FLAIR reference scores Dice 0.003 on their lesion slices vs
0.557 on the validation patients'), and a U-Net trained on the 6 training patients does not
transfer to them: lesion-slice Dice 0.04 with all 3 channels, 0.23 with FLAIR only (the default).
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
LGG = Path(os.environ.get("MEDDX_SHARED_DATA", ROOT.parent / "shared" / "data")) / "lgg"


def otsu_baseline(ds, idx):
    """Otsu threshold of the FLAIR channel, largest component: a training-free reference."""
    from skimage.filters import threshold_otsu

    from meddx.evaluate.segmentation import segmentation_metrics
    from meddx.io import read_image
    from meddx.train.segmentation import postprocess_mask

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
    m = segmentation_metrics(preds, truths)
    les = [c["dice"] for c in m["per_case"] if not c["truth_empty"]]
    m["dice_lesion_cases"] = float(np.mean(les)) if les else None
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "segmentation_lgg"))
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-minutes", type=float, default=13.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--select-channels", default="1",
                    help="input channels (0 pre-contrast, 1 FLAIR, 2 post-contrast); default FLAIR only, the "
                         "sequence the masks were drawn on (all three: 0,1,2)")
    ap.add_argument("--intensity", default="zscore:nonzero")
    ap.add_argument("--augment", default="flip", choices=["none", "flip", "light", "strong"])
    ap.add_argument("--patience", type=int, default=30,
                    help="early-stopping patience in epochs (validation Dice on 2 patients is noisy: a short "
                         "patience stopped at an early, under-fitted epoch)")
    args = ap.parse_args(argv)
    if not LGG.is_dir():
        print(f"skip: {LGG} is absent")
        return 0
    from meddx.data.lgg import paired_folder_dataset
    from meddx.data.splits import assign_splits
    from meddx.runs import load_run
    from meddx.train.config import TrainConfig
    from meddx.train.segmentation import evaluate_segmenter, train_segmenter

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    cfg = TrainConfig(task="segmentation", model="unet", epochs=args.epochs, batch_size=args.batch,
                      learning_rate=args.lr, image_size=args.size, augment=args.augment, seed=args.seed,
                      select_channels=[int(c) for c in args.select_channels.split(",")], intensity=args.intensity,
                      patience=args.patience, max_minutes=args.max_minutes, test_fraction=args.test_fraction,
                      val_fraction=0.15)
    t0 = time.monotonic()
    info = train_segmenter(LGG, out / "run", cfg, overwrite=True, base_filters=args.base, depth=4, verbose=0)
    t_train = time.monotonic() - t0
    run = load_run(out / "run")
    t1 = time.monotonic()
    m = evaluate_segmenter(run, LGG, out / "eval", split="test")
    t_eval = time.monotonic() - t1
    ds = paired_folder_dataset(LGG)
    splits = assign_splits(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    test_idx = np.flatnonzero(splits == "test")
    ref = otsu_baseline(ds, test_idx)
    load1 = os.getloadavg()
    rows = [
        ("unet (meddx)", m["dice_lesion_cases"], m["dice"], m["hd95"], m["lesion_sensitivity"], m["fp_per_image"]),
        ("otsu FLAIR baseline", ref["dice_lesion_cases"], ref["dice"], ref["hd95"], ref["lesion_sensitivity"],
         ref["fp_per_image"]),
        ("all background", 0.0, float(np.mean([c["truth_empty"] for c in m["per_case"]])), None, 0.0, 0.0),
    ]
    f = lambda v: "   n/a" if v is None else f"{v:6.3f}"  # noqa: E731
    print(f"\nLGG test patients: {sorted(set(ds.patient_ids[test_idx]))}, {len(test_idx)} slices, "
          f"{m['n_lesion_cases']} with lesion")
    print(f"{'method':<22}{'Dice(lesion sl.)':>17}{'Dice(all)':>10}{'HD95 px':>9}{'les.sens':>9}{'FP/img':>8}")
    for r in rows:
        print(f"{r[0]:<22}{f(r[1]):>17}{f(r[2]):>10}{f(r[3]):>9}{f(r[4]):>9}{f(r[5]):>8}")
    print(f"training {t_train / 60:.1f} min wall ({info['epochs_run']} epochs, best {info['best_epoch']}), "
          f"evaluation {t_eval:.1f} s; load average before {load0[0]:.2f}, after {load1[0]:.2f} "
          f"on {os.cpu_count()} cores")
    result = {"unet": {k: m[k] for k in ("dice", "dice_lesion_cases", "iou", "hd95", "asd", "lesion_sensitivity",
                                         "fp_per_image", "n", "n_lesion_cases", "units", "dice_per_patient")},
              "otsu_baseline": {k: ref[k] for k in ("dice", "dice_lesion_cases", "hd95", "lesion_sensitivity",
                                                    "fp_per_image")},
              "train_wall_s": round(t_train, 1), "eval_wall_s": round(t_eval, 1),
              "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"],
              "val_metrics": info["val_metrics"], "config": info["config"],
              "model_options": info["model_options"], "loadavg_before": load0, "loadavg_after": load1,
              "cpu_count": os.cpu_count(), "test_patients": sorted(set(ds.patient_ids[test_idx]))}
    (out / "segmentation_lgg.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {out / 'segmentation_lgg.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
