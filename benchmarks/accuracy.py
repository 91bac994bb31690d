"""MedMNIST accuracy of the default recipe, estimated without the held-out test splits.

For each set, the official train+val cases are split into K stratified folds; each fold is held out once while
`meddx train` (defaults, through the CLI, timed) learns on the rest (its own validation split carved from them)
and `meddx evaluate --split test` scores the held-out fold. Printed per set: cross-validated AUC and
`accuracy_argmax` (MedMNIST's definition) with 95 % bootstrap CIs over the pooled out-of-fold cases, the accuracy
at the RUN's own operating threshold (`robust_threshold`) and at the previous default's Youden threshold, and the
wall time of `meddx train`; the recipes (RECIPES) side by side on the same folds, and for an ensemble each member's
own figures (one model of the recipe, from the same RUNs). Beside them: MedMNIST v2's ResNet-18 (28) test figures
and the previous default's test figures from the issue (the judged test splits are not in ../shared, so those are quoted, not re-measured).

    python benchmarks/accuracy.py [--sets breast,pneumonia,retina,adrenal3d] [--recipes default,previous] [--folds 3] [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, parser, print_header, table, write_results  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"
FILES = {"breast": "breastmnist_trainval.npz", "pneumonia": "pneumoniamnist_trainval.npz",
         "retina": "retinamnist_trainval.npz", "adrenal3d": "adrenalmnist3d_trainval.npz"}
# MedMNIST v2 ResNet-18 (28) test AUC / ACC (ACS ResNet-18 for 3D), and the previous meddx default on the test
# split (issue 20's table: accuracy at its Youden threshold).
RESNET18 = {"breast": (0.901, 0.863), "pneumonia": (0.944, 0.854), "retina": (0.717, 0.524),
            "adrenal3d": (0.839, 0.754)}
# Recipes by the settings that differ from the default: "previous" is the default before 2026-12-02 (one model
# instead of an ensemble of three for MedMNIST-sized data), "weighted" the one before it (one model, classes
# weighted; its operating threshold was the validation split's Youden point, column "ACC @ old Youden").
RECIPES: dict[str, dict[str, Any]] = {"default": {}, "previous": {"members": 1},
                                      "weighted": {"members": 1, "class_weights": True},
                                      "smooth": {"label_smoothing": 0.1}}
PREVIOUS = {"breast": (0.918, 0.808), "pneumonia": (0.966, 0.880), "retina": (0.722, 0.460),
            "adrenal3d": (0.863, 0.829)}


def _folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index of each case, stratified by class."""
    from sklearn.model_selection import StratifiedKFold

    fold = np.zeros(len(y), int)
    for i, (_, te) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
        fold[te] = i
    return fold


def _write_fold(x: np.ndarray, y: np.ndarray, fold: np.ndarray, k: int, path: Path, seed: int) -> None:
    """npz with train/val from the other folds (val: a stratified ~10 %) and test = fold k."""
    from sklearn.model_selection import train_test_split

    rest = np.flatnonzero(fold != k)
    tr, va = train_test_split(rest, test_size=0.1, stratify=y[rest], random_state=seed)
    te = np.flatnonzero(fold == k)
    np.savez(path, train_images=x[tr], train_labels=y[tr, None], val_images=x[va], val_labels=y[va, None],
             test_images=x[te], test_labels=y[te, None])


def _meddx(*args: str) -> float:
    """Run the meddx CLI; seconds taken (raises with the CLI's last lines on failure)."""
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "meddx.cli", *args], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"meddx {' '.join(args[:1])} failed: {res.stderr.strip()[-500:]}")
    return time.monotonic() - t0


def _oof_probs(p: Any, npz: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(held-out labels, probabilities, the RUN's threshold, the Youden threshold of the RUN's validation split:
    the previous default) of one fold, from the RUN's predictor `p`."""
    from meddx.evaluate.classification import youden_threshold

    d = np.load(npz)
    te, va = _predict_split(p, d, "test"), _predict_split(p, d, "val")
    youden = youden_threshold(d["val_labels"].ravel(), va[:, 1]) if te.shape[1] == 2 else float("nan")
    thr = float(p.threshold) if p.threshold is not None else float("nan")
    return d["test_labels"].ravel(), te, thr, youden


def _images(arrays: np.ndarray) -> list[Any]:
    """An npz split's arrays as meddx Images (2D grey, 2D colour or 3D), as a user's files would arrive."""
    from meddx.io.image import Image

    colour = arrays.ndim == 4 and arrays.shape[-1] == 3
    ndim = 2 if (arrays.ndim == 3 or colour) else 3
    return [Image(array=np.asarray(a), spatial_ndim=ndim, has_channels=colour) for a in arrays]


def _predict_split(p: Any, d: Any, split: str) -> np.ndarray:
    """Class probabilities of an npz split through the predictor (the RUN's preprocessing, batched)."""
    imgs = _images(d[f"{split}_images"])
    out = []
    for k in range(0, len(imgs), 64):
        out += [list(q.probabilities.values()) for q in p.predict_batch(imgs[k:k + 64], heatmap=False)]
    return np.asarray(out, dtype=np.float64)


def _member_probs(p: Any, npz: Path) -> list[np.ndarray]:
    """Each ensemble member's class probabilities on the held-out fold (its own logits, no temperature), so one
    model and the ensemble compare on the same RUN (predictor `p`); [] for a single model."""
    from meddx.models.ensemble import member_count, training_view
    from meddx.models.outputs import logits_to_probs

    k = member_count(p.model)
    if k == 1:
        return []
    x = np.stack([p.preprocessing(img) for img in _images(np.load(npz)["test_images"])])
    z = training_view(p.model).predict(x, batch_size=128, verbose=0)
    units = z.shape[1] // k
    return [logits_to_probs(z[:, m * units:(m + 1) * units], p.task) for m in range(k)]


def member_figures(y: np.ndarray, members: list[np.ndarray]) -> dict[str, Any]:
    """AUC and argmax accuracy of each member alone (pooled over the folds, as the ensemble's) and of their plain
    mean: what one model of the recipe scores, beside what the ensemble of the same training runs scores."""
    from meddx.evaluate.classification import accuracy_argmax, macro_auc_ovr, roc_auc

    binary = members[0].shape[1] == 2
    task = "binary" if binary else "multiclass"
    auc_fn = (lambda a, b: roc_auc(a, b[:, 1])) if binary else macro_auc_ovr
    aucs = [float(auc_fn(y, m)) for m in members]
    accs = [float(accuracy_argmax(y, m, task)) for m in members]
    mean = np.mean(members, axis=0)
    return {"member_auc": aucs, "member_accuracy_argmax": accs, "member_auc_mean": float(np.mean(aucs)),
            "member_acc_mean": float(np.mean(accs)), "members_averaged_auc": float(auc_fn(y, mean)),
            "members_averaged_acc": float(accuracy_argmax(y, mean, task))}


def run_set(name: str, folds: int, quick: bool, seed: int, work: Path, recipe: str = "default") -> dict[str, Any]:
    """Cross-validated figures of one recipe (RECIPES) on one MedMNIST set."""
    from meddx.evaluate.classification import accuracy_argmax, bootstrap_ci, roc_auc, macro_auc_ovr
    from meddx.infer import load

    d = np.load(DATA / FILES[name])
    x = np.concatenate([d["train_images"], d["val_images"]])
    y = np.concatenate([d["train_labels"], d["val_labels"]]).ravel().astype(int)
    if quick:
        keep = np.random.default_rng(seed).choice(len(y), min(len(y), 240), replace=False)
        x, y = x[keep], y[keep]
    fold = _folds(y, folds, seed)
    ys, ps, at_thr, at_youden, minutes, members = [], [], [], [], [], []
    for k in range(folds if not quick else 1):
        npz = work / f"{name}_fold{k}.npz"
        _write_fold(x, y, fold, k, npz, seed)
        run = work / f"{name}_{recipe}_run{k}"
        extra = ["--epochs", "1"] if quick else []
        if RECIPES[recipe]:
            cfg = work / f"{recipe}.json"
            cfg.write_text(json.dumps(RECIPES[recipe]))
            extra += ["--config", str(cfg)]
        minutes.append(_meddx("train", str(npz), "--out", str(run), "--seed", str(seed), *extra) / 60)
        predictor = load(run)
        yt, pt, thr, youden = _oof_probs(predictor, npz)
        members.append(_member_probs(predictor, npz))
        ys.append(yt)
        ps.append(pt)
        if pt.shape[1] == 2:
            at_thr.append(np.mean((pt[:, 1] >= thr).astype(int) == yt))
            at_youden.append(np.mean((pt[:, 1] >= youden).astype(int) == yt))
    yy, pp = np.concatenate(ys), np.concatenate(ps)
    binary = pp.shape[1] == 2
    auc_fn = (lambda a, b: roc_auc(a, b[:, 1])) if binary else macro_auc_ovr
    auc = auc_fn(yy, pp)
    auc_ci = bootstrap_ci(auc_fn, yy, pp, n_boot=500, seed=seed)
    acc = accuracy_argmax(yy, pp, "binary" if binary else "multiclass")
    acc_ci = bootstrap_ci(lambda a, b: accuracy_argmax(a, b, "binary" if binary else "multiclass"), yy, pp,
                          n_boot=500, seed=seed)
    return {"set": name, "recipe": recipe, "n": int(len(yy)), "folds": folds, "auc": auc, "auc_ci": auc_ci,
            "accuracy_argmax": acc, "acc_ci": acc_ci,
            "acc_at_run_threshold": float(np.mean(at_thr)) if at_thr else None,
            "acc_at_previous_youden": float(np.mean(at_youden)) if at_youden else None,
            "train_minutes_max": max(minutes), "resnet18_test": RESNET18[name], "previous_test": PREVIOUS[name],
            **(member_figures(yy, [np.concatenate(m) for m in zip(*members)]) if all(members) else {})}


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--sets", default="breast,pneumonia,retina,adrenal3d")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", default="default,previous", help="comma-separated: " + ", ".join(RECIPES))
    args = ap.parse_args()
    info = machine_info()
    print_header("MedMNIST accuracy of the default recipe (cross-validated on train+val)", info)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            for recipe in args.recipes.split(","):
                r = run_set(name, args.folds, args.quick, args.seed, Path(tmp), recipe)
                rows.append(r)
                print(json.dumps({k: v for k, v in r.items()}, default=float), flush=True)
    shown = [{"set": r["set"], "recipe": r["recipe"], "n": r["n"], "CV AUC [95% CI]": f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f}, "
              f"{r['auc_ci'][1]:.3f}]", "CV ACC argmax [95% CI]": f"{r['accuracy_argmax']:.3f} "
              f"[{r['acc_ci'][0]:.3f}, {r['acc_ci'][1]:.3f}]",
              "ACC @ RUN thr": r["acc_at_run_threshold"], "ACC @ old Youden": r["acc_at_previous_youden"],
              "train min (max fold)": r["train_minutes_max"],
              "one member alone: AUC / ACC (mean of members)": "%.3f / %.3f" % (r["member_auc_mean"], r["member_acc_mean"])
              if "member_auc_mean" in r else "-",
              "ResNet-18 test AUC/ACC": "%.3f / %.3f" % r["resnet18_test"],
              "previous meddx test AUC/ACC": "%.3f / %.3f" % r["previous_test"]} for r in rows]
    text = table(shown)
    print(text)
    write_results(args, "accuracy", info, {"rows": rows}, {"accuracy": text})


if __name__ == "__main__":
    main()
