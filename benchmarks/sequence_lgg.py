"""Sequence benchmarks on the real LGG slice stacks (10 patients) and the synthetic cine-like set.

1. Slice labelling: per-slice lesion presence F1 of a per-slice classifier, then HMM and CRF
   smoothing along each patient's slice sequence; 5-fold by patient (2 held-out patients per fold),
   repeated over `--seeds` (the pixel sampling / booster seed). Per-slice classifier = balanced
   logistic regression on `PixelLesionScorer` features (a pixel booster trained on the training
   patients' masks, summarised per slice, absolute and relative to the stack). The smoothers are fitted
   only on inner out-of-fold probabilities of the training patients: HMM transitions counted from the
   training label sequences with the classifier's output as emission (hybrid NN/HMM, Viterbi); CRF
   (c1 = c2 = 0.1, no position features) decoded by marginal >= the training lesion rate (the
   balanced decision rule); the inner-CV-tuned CRF (`tune_crf`) is reported too.
2. Sequence heads (lstm, gru, tcn, transformer): held-out AUC vs chance (0.5) on
   (a) LGG windows of W slices labelled "lesion present in window", 5-fold by patient, with the
   recipe: stacks z-scored per patient (`normalise_stack`), per-frame encoder pretrained on the
   training patients' single slices against their lesion masks (`pretrain_frame_encoder`), frozen,
   temporal head trained on the windows; spread = per-fold AUC sd and a patient-bootstrap 95% CI;
   (b) synthetic sequences (`make_synthetic_sequences`, disjoint train/test studies, same recipe).

Run:  python benchmarks/sequence_lgg.py [--out results.json]   (default: benchmarks/results/sequence_lgg.json)
Prints a table; writes JSON. On a shared 2-core CPU this takes about 10-15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lgg"


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def slice_labelling(lgg: dict, seed: int = 0) -> dict:
    """Raw vs HMM vs CRF per-slice F1 with 5-fold-by-patient evaluation (nothing tuned on held-out patients).

    Per outer fold (8 training, 2 held-out patients): `PixelLesionScorer` features of the training
    patients come out-of-fold (inner 4-fold: each patient scored by a pixel model that never saw it);
    a balanced logistic regression on them is the per-slice classifier (its inner cross-validated
    probabilities fit the HMM and tune the CRF); the pixel model refitted on all 8 training patients
    scores the held-out ones.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from meddx.classic.slice_labelling import (CRFSmoother, HMMSmoother, PixelLesionScorer,
                                               out_of_fold_slice_features, sequence_f1, tune_crf)

    frames, masks, labels = lgg["frames"], lgg["masks"], lgg["labels"]
    n = len(frames)
    pids = np.arange(n)

    def clf() -> object:
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))

    raw_p: list = [None] * n
    hmm_y: list = [None] * n
    crf_y: list = [None] * n
    crft_y: list = [None] * n
    crf_params: list = []
    hmm_weights: list = []
    for tr, te in GroupKFold(n_splits=5).split(pids, groups=pids):
        tr_frames, tr_masks, tr_labels = [frames[i] for i in tr], [masks[i] for i in tr], [labels[i] for i in tr]
        oof_feats = out_of_fold_slice_features(tr_frames, tr_masks, n_splits=4, seed=seed)
        Xtr, ytr = np.concatenate(oof_feats), np.concatenate(tr_labels)
        gtr = np.concatenate([[j] * len(y) for j, y in enumerate(tr_labels)])
        # inner cross-validated slice probabilities of the training patients: what the smoothers are fitted on
        oof = cross_val_predict(clf(), Xtr, ytr, groups=gtr, cv=GroupKFold(n_splits=4), method="predict_proba")[:, 1]
        bounds = np.cumsum([0] + [len(y) for y in tr_labels])
        oof_seqs = [oof[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        model = clf().fit(Xtr, ytr)
        scorer = PixelLesionScorer(seed=seed).fit(tr_frames, tr_masks)
        te_p = [model.predict_proba(f)[:, 1] for f in scorer.slice_features([frames[i] for i in te])]
        hmm = HMMSmoother().fit(oof_seqs, tr_labels)
        hmm_weights.append(float(hmm.hmm_.emission_weight))
        crf = CRFSmoother(c1=0.1, c2=0.1, threshold="prior", position=False).fit(oof_seqs, tr_labels)
        crft = tune_crf(oof_seqs, tr_labels)  # c1/c2/threshold by inner grouped CV on the training patients
        crf_params.append([crft.c1, crft.c2, crft.threshold])
        for i, p, h, c, ct in zip(te, te_p, hmm.predict(te_p), crf.predict(te_p), crft.predict(te_p)):
            raw_p[i], hmm_y[i], crf_y[i], crft_y[i] = p, h, c, ct
    raw_y = [(p >= 0.5).astype(int) for p in raw_p]
    all_y = np.concatenate(labels)
    return {
        "n_patients": n, "n_slices": int(all_y.size), "positive_slices": int(all_y.sum()),
        "f1_raw": sequence_f1(labels, raw_y), "f1_hmm": sequence_f1(labels, hmm_y), "f1_crf": sequence_f1(labels, crf_y),
        "f1_crf_tuned": sequence_f1(labels, crft_y), "auc_raw": _auc(all_y, np.concatenate(raw_p)),
        "crf_tuned_c1_c2_threshold_per_fold": crf_params,
        "hmm_emission_weight_per_fold": hmm_weights,
        "per_patient_f1": {
            lgg["patient_ids"][i]: [sequence_f1([labels[i]], [raw_y[i]]), sequence_f1([labels[i]], [hmm_y[i]]),
                                    sequence_f1([labels[i]], [crf_y[i]])] for i in range(n)},
    }


def _fit_head(name: str, encoder: object | None, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray,
              epochs: int, filters: tuple, lr: float, seed: int, pooling: str = "avg",
              lesion_map: bool = False) -> np.ndarray:
    """Build head `name` (per-frame `pooling` "avg"/"max", optional pretrained lesion-map channel), load + freeze
    the pretrained frame encoder (when given), train, return test logits."""
    import keras

    from meddx.models import build_model
    from meddx.models.sequence import load_frame_encoder

    keras.utils.set_random_seed(seed)
    opts = {} if name == "cnn25d" else {"pooling": pooling, "lesion_map": lesion_map}
    model = build_model(name, Xtr.shape[1:], 2, task="binary", filters=filters, **opts)
    if encoder is not None and name != "cnn25d":
        load_frame_encoder(model, encoder, freeze=True)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    pos = min(max(float(ytr.mean()), 1e-3), 1 - 1e-3)
    cw = {0: 0.5 / (1 - pos), 1: 0.5 / pos}
    model.fit(Xtr, ytr.astype("float32"), epochs=epochs, batch_size=16, verbose=0, class_weight=cw, shuffle=True)
    return model.predict(Xte, batch_size=32, verbose=0).ravel()


def _patient_bootstrap_auc(y: np.ndarray, s: np.ndarray, groups: np.ndarray, n_boot: int = 1000,
                           seed: int = 0) -> list[float]:
    """95% CI of the pooled AUC when whole patients are resampled (windows of one patient are correlated)."""
    rng = np.random.default_rng(seed)
    pats = np.unique(groups)
    idx = {p: np.flatnonzero(groups == p) for p in pats}
    vals = []
    for _ in range(n_boot):
        take = np.concatenate([idx[p] for p in rng.choice(pats, pats.size, replace=True)])
        if len(np.unique(y[take])) == 2:
            vals.append(_auc(y[take], s[take]))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def _summary(y: np.ndarray, s: np.ndarray, fold_aucs: list, seconds: float, groups: np.ndarray | None) -> dict:
    f = np.asarray(fold_aucs, float)
    out = {"auc": _auc(y, s), "accuracy": float(np.mean((s > 0) == y)), "fold_auc": f.tolist(),
           "fold_auc_mean": float(np.nanmean(f)), "fold_auc_sd": float(np.nanstd(f)), "seconds": seconds}
    if groups is not None:
        out["auc_ci95_patient_bootstrap"] = _patient_bootstrap_auc(y, s, groups)
    return out


def lgg_heads(lgg: dict, heads: list[str], window: int, stride: int, epochs: int, pre_epochs: int,
              filters: tuple, lr: float, seed: int = 0, pooling: str = "avg", lesion_map: bool = False) -> dict:
    """Held-out AUC of each head on LGG windows, 5-fold by patient, frozen mask-pretrained frame encoder."""
    from sklearn.model_selection import GroupKFold

    from meddx.data.sequences import make_windows, normalise_stack
    from meddx.models.sequence import pretrain_frame_encoder

    frames = [normalise_stack(f) for f in lgg["frames"]]
    pids = np.arange(len(frames))
    w = make_windows(frames, lgg["labels"], window=window, stride=stride, groups=pids)
    X, y, g = w["X"].astype("float32"), w["y"], w["groups"]
    out: dict = {"n": int(len(y)), "positive_rate": float(y.mean()), "window": window, "stride": stride,
                 "chance_auc": 0.5, "chance_accuracy": float(max(y.mean(), 1 - y.mean()))}
    scores = {h: np.zeros(len(y)) for h in heads}
    folds: dict = {h: [] for h in heads}
    secs = {h: 0.0 for h in heads}
    pre_secs = 0.0
    for tr, te in GroupKFold(n_splits=5).split(X, y, groups=g):
        t0 = time.time()
        trp = np.unique(g[tr])
        enc = pretrain_frame_encoder(np.concatenate([frames[i] for i in trp]),
                                     np.concatenate([lgg["masks"][i] for i in trp]), filters=filters,
                                     epochs=pre_epochs, seed=seed)
        pre_secs += time.time() - t0
        for h in heads:
            t0 = time.time()
            scores[h][te] = _fit_head(h, enc, X[tr], y[tr], X[te], epochs, filters, lr, seed, pooling, lesion_map)
            folds[h].append(_auc(y[te], scores[h][te]))
            secs[h] += time.time() - t0
    out["pretrain_seconds"] = pre_secs
    for h in heads:
        out[h] = _summary(y, scores[h], folds[h], secs[h], g)
        print(f"  lgg {h}: auc {out[h]['auc']:.3f} folds {np.round(folds[h], 2)}", file=sys.stderr, flush=True)
    return out


def synthetic_heads(heads: list[str], n_studies: int, epochs: int, pre_epochs: int, filters: tuple, lr: float,
                    seed: int = 0, pooling: str = "avg", lesion_map: bool = False) -> dict:
    """Held-out AUC of each head on synthetic lesion sequences (first 70% of studies train, the rest test)."""
    from meddx.data.synthetic import make_synthetic_sequences
    from meddx.models.sequence import pretrain_frame_encoder

    syn = make_synthetic_sequences(n_studies=n_studies, n_slices=8, size=24, seed=seed + 3, min_run=2)
    X, y = syn["images"][..., None].astype("float32"), syn["labels"]
    ntr = int(round(0.7 * n_studies))
    t0 = time.time()
    enc = pretrain_frame_encoder(X[:ntr].reshape((-1,) + X.shape[2:]), syn["masks"][:ntr].reshape((-1,) + X.shape[2:4]),
                                 filters=filters, epochs=pre_epochs, seed=seed)
    out: dict = {"n_train": ntr, "n_test": n_studies - ntr, "positive_rate_test": float(y[ntr:].mean()),
                 "chance_auc": 0.5, "pretrain_seconds": time.time() - t0}
    for h in heads:
        t0 = time.time()
        s = _fit_head(h, enc, X[:ntr], y[:ntr], X[ntr:], epochs, filters, lr, seed, pooling, lesion_map)
        out[h] = _summary(y[ntr:], s, [], time.time() - t0, None)
        out[h]["auc_ci95_bootstrap"] = _patient_bootstrap_auc(y[ntr:], s, np.arange(n_studies - ntr))
        print(f"  synthetic {h}: auc {out[h]['auc']:.3f}", file=sys.stderr, flush=True)
    return out


def _print_slice_table(runs: list[dict]) -> None:
    r0 = runs[0]
    print("\nSlice labelling on LGG (per-slice lesion presence F1, held-out patients, 5-fold by patient, "
          f"{r0['n_slices']} slices, {r0['positive_slices']} positive); one column per seed")
    rows = [("per-slice classifier (raw)", "f1_raw"), ("+ HMM (Viterbi)", "f1_hmm"),
            ("+ CRF (prior threshold)", "f1_crf"), ("+ CRF (inner-CV tuned)", "f1_crf_tuned")]
    print(f"{'method':<30}" + "".join(f"{'seed ' + str(r['seed']):>9}" for r in runs) + f"{'mean':>8}")
    for label, key in rows:
        vals = [r[key] for r in runs]
        print(f"{label:<30}" + "".join(f"{v:>9.3f}" for v in vals) + f"{np.mean(vals):>8.3f}")
    print(f"{'(raw per-slice AUC)':<30}" + "".join(f"{r['auc_raw']:>9.3f}" for r in runs))


def _print_heads_table(lw: dict, sy: dict, heads: list[str]) -> None:
    print("\nSequence heads: held-out AUC (chance 0.5); frozen mask-pretrained frame encoder")
    print(f"  LGG windows of {lw['window']} slices (stride {lw['stride']}), n={lw['n']}, positive "
          f"{lw['positive_rate']:.2f}, 5-fold by patient;  synthetic n_train={sy['n_train']} n_test={sy['n_test']}")
    print(f"{'head':<13}{'LGG AUC':>9}{'patient-boot 95% CI':>22}{'fold mean+-sd':>16}{'syn AUC':>9}"
          f"{'syn 95% CI':>16}{'sec':>7}")
    for h in heads:
        a, b = lw[h], sy[h]
        ci = "[%.2f, %.2f]" % tuple(a["auc_ci95_patient_bootstrap"])
        cs = "[%.2f, %.2f]" % tuple(b["auc_ci95_bootstrap"])
        spread = "%.2f+-%.2f" % (a["fold_auc_mean"], a["fold_auc_sd"])
        print(f"{h:<13}{a['auc']:>9.3f}{ci:>22}{spread:>16}{b['auc']:>9.3f}{cs:>16}{a['seconds'] + b['seconds']:>7.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.environ.get("MEDDX_LGG_ROOT") or str(DEFAULT_ROOT),
                    help="LGG data folder (default: $MEDDX_LGG_ROOT, else ../shared/data/lgg beside the repository)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the slice-labelling run (one column each)")
    ap.add_argument("--size", type=int, default=32, help="frame size for the sequence heads")
    ap.add_argument("--window", type=int, default=6)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--syn-studies", type=int, default=120)
    ap.add_argument("--heads", default="lstm,gru,tcn,transformer")
    ap.add_argument("--pooling", default="avg", choices=("avg", "max"), help="per-frame global pooling of the heads")
    ap.add_argument("--lesion-map", action="store_true", help="keep the pretrained lesion-logit map as a frame channel")
    ap.add_argument("--skip-heads", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "sequence_lgg.json"))
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from meddx.data.sequences import load_lgg_sequences

    t0 = time.time()
    lgg64 = load_lgg_sequences(args.root, size=64)
    runs = []
    for seed in [int(v) for v in args.seeds.split(",") if v]:
        t1 = time.time()
        runs.append({"seed": seed, **slice_labelling(lgg64, seed=seed), "seconds": time.time() - t1})
    _print_slice_table(runs)
    result: dict = {"slice_labelling": runs}
    if not args.skip_heads:
        lgg = load_lgg_sequences(args.root, size=args.size)
        heads = [h for h in args.heads.split(",") if h]
        filters = (8, 16, 32)
        opts = {"pooling": args.pooling, "lesion_map": args.lesion_map}
        lw = lgg_heads(lgg, heads, args.window, args.stride, args.epochs, args.pretrain_epochs, filters, args.lr, **opts)
        sy = synthetic_heads(heads, args.syn_studies, args.epochs, args.pretrain_epochs, (8, 16), args.lr, **opts)
        result["frame_encoder"] = opts
        result["sequence_heads"] = {"lgg_windows": lw, "synthetic": sy}
        _print_heads_table(lw, sy, heads)
    result["seconds"] = time.time() - t0
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
