"""Sequence benchmarks on the real LGG slice stacks (10 patients) and the synthetic cine-like set.

1. Slice labelling: per-slice lesion presence F1 of a per-slice classifier (handcrafted features,
   incl. FLAIR hyperintensity relative to the patient's stack, + logistic regression), then HMM and CRF
   smoothing along each patient's slice sequence. CRF c1/c2/decoding threshold tuned by inner CV.
   5-fold by patient (2 held-out patients per fold); the smoothers are fitted on inner
   out-of-fold probabilities of the training patients only.
2. Sequence heads (lstm, gru, tcn, transformer, cnn25d): held-out AUC / accuracy vs chance on
   (a) LGG windows of W slices labelled "lesion present in window" (5-fold by patient) and
   (b) synthetic sequences (`make_synthetic_sequences`, disjoint train/test studies).

Run:  python benchmarks/sequence_lgg.py [--quick] [--out results.json]
Prints a table; writes JSON. On a shared 2-core CPU this takes a few minutes.
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


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def slice_labelling(lgg: dict, seed: int = 0) -> dict:
    """Raw vs HMM vs CRF per-slice F1 with 5-fold-by-patient evaluation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from meddx.classic.slice_labelling import (HMMSmoother, hyperintensity_features, sequence_f1,
                                               slice_feature_matrix, tune_crf)

    # per-slice features: generic intensity/grid features + FLAIR hyperintensity relative to the patient's own
    # stack (the generic ones alone mostly learn "mid-volume slice", AUC 0.77, and smoothing then hurts)
    feats = [np.hstack([slice_feature_matrix(f), hyperintensity_features(f, channel=1)]) for f in lgg["frames"]]
    labels = lgg["labels"]
    n = len(feats)
    pids = np.arange(n)

    def clf() -> object:
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))

    outer = GroupKFold(n_splits=5)
    raw_p: list = [None] * n
    hmm_y: list = [None] * n
    crf_y: list = [None] * n
    crf_params: list = []
    for tr, te in outer.split(pids, groups=pids):
        Xtr = np.concatenate([feats[i] for i in tr])
        ytr = np.concatenate([labels[i] for i in tr])
        gtr = np.concatenate([[i] * len(labels[i]) for i in tr])
        # inner out-of-fold probabilities for fitting the smoothers honestly
        oof = cross_val_predict(clf(), Xtr, ytr, groups=gtr, cv=GroupKFold(n_splits=4), method="predict_proba")[:, 1]
        bounds = np.cumsum([0] + [len(labels[i]) for i in tr])
        oof_seqs = [oof[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        tr_labels = [labels[i] for i in tr]
        model = clf().fit(Xtr, ytr)
        te_p = [model.predict_proba(feats[i])[:, 1] for i in te]
        hmm = HMMSmoother().fit(oof_seqs, tr_labels)
        crf = tune_crf(oof_seqs, tr_labels)  # c1/c2 by inner grouped CV on the training patients
        crf_params.append([crf.c1, crf.c2, crf.threshold])
        for i, p, h, c in zip(te, te_p, hmm.predict(te_p), crf.predict(te_p)):
            raw_p[i], hmm_y[i], crf_y[i] = p, h, c
    raw_y = [(p >= 0.5).astype(int) for p in raw_p]
    all_y = np.concatenate(labels)
    res = {
        "n_patients": n, "n_slices": int(all_y.size), "positive_slices": int(all_y.sum()),
        "f1_raw": sequence_f1(labels, raw_y), "f1_hmm": sequence_f1(labels, hmm_y), "f1_crf": sequence_f1(labels, crf_y),
        "auc_raw": _auc(all_y, np.concatenate(raw_p)), "crf_c1_c2_threshold_per_fold": crf_params,
        "per_patient_f1": {
            lgg["patient_ids"][i]: [sequence_f1([labels[i]], [raw_y[i]]), sequence_f1([labels[i]], [hmm_y[i]]),
                                    sequence_f1([labels[i]], [crf_y[i]])] for i in range(n)},
    }
    return res


def _train_eval(name: str, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, epochs: int, seed: int,
                input_shape: tuple) -> np.ndarray:
    import keras

    from meddx.models import build_model

    keras.utils.set_random_seed(seed)
    kw = {"filters": (8, 16, 32)}
    model = build_model(name, input_shape, 2, task="binary", **kw)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    pos = max(float(ytr.mean()), 1e-3)
    cw = {0: 0.5 / (1 - pos), 1: 0.5 / pos}
    model.fit(Xtr, ytr.astype("float32"), epochs=epochs, batch_size=16, verbose=0, class_weight=cw, shuffle=True)
    return model.predict(Xte, batch_size=32, verbose=0).ravel()


def sequence_heads(lgg: dict, heads: list[str], window: int, stride: int, epochs: int, n_syn: int,
                   syn_epochs: int, seed: int = 0) -> dict:
    """Held-out AUC/accuracy of each head on LGG windows (5-fold by patient) and synthetic sequences."""
    from sklearn.model_selection import GroupKFold

    from meddx.data.sequences import make_windows
    from meddx.data.synthetic import make_synthetic_sequences

    w = make_windows(lgg["frames"], lgg["labels"], window=window, stride=stride, groups=lgg["patient_ids"])
    X, y, g = w["X"], w["y"], w["groups"]
    out: dict = {"lgg_windows": {"n": int(len(y)), "positive_rate": float(y.mean()), "window": window},
                 "synthetic": {}}
    chance_acc = max(y.mean(), 1 - y.mean())
    out["lgg_windows"]["chance_accuracy"] = float(chance_acc)
    for name in heads:
        t0 = time.time()
        scores = np.zeros(len(y))
        for tr, te in GroupKFold(n_splits=5).split(X, y, groups=g):
            scores[te] = _train_eval(name, X[tr], y[tr], X[te], epochs, seed, X.shape[1:])
        out["lgg_windows"][name] = {"auc": _auc(y, scores), "accuracy": float(np.mean((scores > 0) == y)),
                                    "seconds": time.time() - t0}
        print(f"  lgg {name}: {out['lgg_windows'][name]}", file=sys.stderr, flush=True)
    syn = make_synthetic_sequences(n_studies=n_syn, n_slices=12, size=32, seed=seed + 7, min_run=2)
    Xs = syn["images"][..., None]
    ys = syn["labels"]
    half = n_syn * 2 // 3
    out["synthetic"] = {"n_train": half, "n_test": n_syn - half, "positive_rate_test": float(ys[half:].mean()),
                        "chance_accuracy": float(max(ys[half:].mean(), 1 - ys[half:].mean()))}
    for name in heads:
        t0 = time.time()
        s = _train_eval(name, Xs[:half], ys[:half], Xs[half:], syn_epochs, seed, Xs.shape[1:])
        out["synthetic"][name] = {"auc": _auc(ys[half:], s), "accuracy": float(np.mean((s > 0) == ys[half:])),
                                  "seconds": time.time() - t0}
        print(f"  synthetic {name}: {out['synthetic'][name]}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/work/shared/data/lgg")
    ap.add_argument("--size", type=int, default=32, help="frame size for the sequence heads")
    ap.add_argument("--window", type=int, default=6)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--syn-studies", type=int, default=150)
    ap.add_argument("--syn-epochs", type=int, default=15)
    ap.add_argument("--heads", default="lstm,gru,tcn,transformer,cnn25d")
    ap.add_argument("--skip-heads", action="store_true")
    ap.add_argument("--out", default="sequence_lgg_results.json")
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from meddx.data.sequences import load_lgg_sequences

    t0 = time.time()
    lgg64 = load_lgg_sequences(args.root, size=64)
    sl = slice_labelling(lgg64)
    print("\nSlice labelling on LGG (per-slice lesion presence, 5-fold by patient, "
          f"{sl['n_slices']} slices, {sl['positive_slices']} positive)")
    print(f"{'method':<28}{'F1':>8}")
    print(f"{'per-slice classifier (raw)':<28}{sl['f1_raw']:>8.3f}")
    print(f"{'+ HMM (Viterbi)':<28}{sl['f1_hmm']:>8.3f}")
    print(f"{'+ CRF':<28}{sl['f1_crf']:>8.3f}")
    print(f"(raw per-slice AUC {sl['auc_raw']:.3f})")
    result = {"slice_labelling": sl}
    if not args.skip_heads:
        lgg = load_lgg_sequences(args.root, size=args.size)
        heads = [h for h in args.heads.split(",") if h]
        sh = sequence_heads(lgg, heads, args.window, args.stride, args.epochs, args.syn_studies, args.syn_epochs)
        result["sequence_heads"] = sh
        lw, sy = sh["lgg_windows"], sh["synthetic"]
        print(f"\nSequence heads: held-out AUC / accuracy (chance AUC 0.5; chance accuracy = majority rate)")
        print(f"  LGG windows of {lw['window']} slices, n={lw['n']}, positive {lw['positive_rate']:.2f}, "
              f"chance acc {lw['chance_accuracy']:.2f};  synthetic n_test={sy['n_test']}, chance acc "
              f"{sy['chance_accuracy']:.2f}")
        print(f"{'head':<13}{'LGG AUC':>9}{'LGG acc':>9}{'syn AUC':>9}{'syn acc':>9}{'sec':>7}")
        for h in heads:
            a, b = lw[h], sy[h]
            print(f"{h:<13}{a['auc']:>9.3f}{a['accuracy']:>9.3f}{b['auc']:>9.3f}{b['accuracy']:>9.3f}"
                  f"{a['seconds'] + b['seconds']:>7.0f}")
    result["seconds"] = time.time() - t0
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
