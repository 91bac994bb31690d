"""Slice/frame labelling: per-frame lesion probabilities smoothed along the sequence by an HMM or a CRF.

A 2D classifier gives every slice a lesion probability; lesions are contiguous along z (or t),
so isolated positives/negatives are usually errors. Two smoothers, each `fit(prob_seqs, label_seqs)`
/ `predict(prob_seqs)` over LISTS of per-sequence arrays (sequences may differ in length):

- `HMMSmoother`: 2-state HMM (hmmlearn) whose transition matrix and start probabilities are
  counted in the training label sequences; emissions are the classifier's probability (hybrid
  NN/HMM, default) or a Gaussian of its logit per state; Viterbi decoding.
- `CRFSmoother`: linear-chain CRF (sklearn-crfsuite) on per-frame features: the probability, its
  logit, the neighbours' probabilities, the position along the sequence.

The per-slice evidence that makes smoothing pay off on real MRI (LGG) comes from `PixelLesionScorer`:
a per-pixel gradient-boosting classifier trained on the training studies' lesion MASKS over
stack-normalised intensities, smoothed/asymmetry maps and position, summarised per slice (peak
probability, predicted lesion area). `out_of_fold_slice_features` gives its honest per-slice
features on training studies (each scored by a model that never saw it).

`lesion_runs(labels)` / `lesion_extent(labels)` turn a 0/1 sequence into [start, stop) runs.
Fit the smoothers on OUT-OF-FOLD probabilities (e.g. `sklearn.model_selection.cross_val_predict`
grouped by patient): in-sample probabilities are over-confident and teach the smoother to trust them.

Longer than 500 lines on purpose: the smoothers (HMM, CRF) and the pixel scorer they are measured with share
the feature helpers; saving without pickle lives in `slice_export.py`, training a RUN in `slice_training.py`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from meddx.data.sequences import zscore_against

__all__ = ["HMMSmoother", "CRFSmoother", "lesion_runs", "lesion_extent", "frame_features", "sequence_f1",
           "slice_feature_matrix", "hyperintensity_features", "tune_crf", "lesion_pixel_features",
           "PixelLesionScorer", "out_of_fold_slice_features", "slice_prf", "stack_frames", "resize_masks"]

_EPS = 1e-4


def _logit(p: np.ndarray, eps: float = _EPS) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def _as_list(seqs: Sequence[Any]) -> list[np.ndarray]:
    out = [np.asarray(s, dtype=np.float64).ravel() for s in seqs]
    if not out or any(s.size == 0 for s in out):
        raise ValueError("need at least one non-empty sequence")
    return out


def _check_labels(prob_seqs: list[np.ndarray], label_seqs: Sequence[Any]) -> list[np.ndarray]:
    labs = [np.asarray(y).astype(np.int64).ravel() for y in label_seqs]
    if len(labs) != len(prob_seqs) or any(a.size != b.size for a, b in zip(labs, prob_seqs)):
        raise ValueError("label sequences must match the probability sequences in number and lengths")
    if any(((y != 0) & (y != 1)).any() for y in labs):
        raise ValueError("frame labels must be 0/1")
    return labs


def lesion_runs(labels: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs of consecutive positive frames, in order."""
    y = np.asarray(labels).astype(bool).ravel()
    padded = np.concatenate([[False], y, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def lesion_extent(labels: Sequence[int] | np.ndarray, numbers: Sequence[int] | None = None) -> dict[str, Any]:
    """Which frames hold the lesion and its extent: `runs` (index [start, stop)), `first`/`last` index (or None),
    `n_positive`, `longest_run`, and with `numbers` (e.g. slice numbers) the runs in those numbers too."""
    y = np.asarray(labels).astype(bool).ravel()
    runs = lesion_runs(y)
    pos = np.flatnonzero(y)
    out: dict[str, Any] = {
        "n_frames": int(y.size), "n_positive": int(pos.size), "runs": runs,
        "first": int(pos[0]) if pos.size else None, "last": int(pos[-1]) if pos.size else None,
        "longest_run": max(runs, key=lambda r: r[1] - r[0]) if runs else None,
    }
    if numbers is not None:
        nums = np.asarray(numbers).ravel()
        out["runs_numbers"] = [(int(nums[a]), int(nums[b - 1])) for a, b in runs]
    return out


def sequence_f1(label_seqs: Sequence[Any], pred_seqs: Sequence[Any]) -> float:
    """Per-frame F1 of the positive class pooled over all frames of all sequences."""
    y = np.concatenate([np.asarray(a).ravel() for a in label_seqs]).astype(bool)
    p = np.concatenate([np.asarray(a).ravel() for a in pred_seqs]).astype(bool)
    tp = float(np.sum(y & p))
    den = 2 * tp + float(np.sum(~y & p)) + float(np.sum(y & ~p))
    return 2 * tp / den if den else 1.0


def _posterior_hmm_class() -> Any:
    """A hmmlearn HMM whose emission scores are the classifier's own per-frame probabilities."""
    from hmmlearn.base import BaseHMM

    class PosteriorHMM(BaseHMM):
        """Hybrid HMM: log p(x | s) = w * log P(s | x) + const (a classifier trained with balanced
        classes gives a posterior proportional to the likelihood). X is (T, 1) probabilities."""

        def __init__(self, emission_weight: float = 1.0, **kw: Any):
            super().__init__(n_components=2, algorithm="viterbi", params="", init_params="", **kw)
            self.emission_weight = emission_weight

        def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
            return {"s": 1, "t": 2}

        def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
            p = np.clip(np.asarray(X, dtype=np.float64)[:, 0], _EPS, 1.0 - _EPS)
            return self.emission_weight * np.stack([np.log1p(-p), np.log(p)], axis=1)

    return PosteriorHMM


class HMMSmoother:
    """Two-state (0 = no lesion, 1 = lesion) HMM over per-frame probabilities, decoded with Viterbi (hmmlearn).

    `fit(probs, labels)` is supervised: start and transition probabilities are counted from the
    label sequences (+`pseudocount`). Emissions (`emission`):
    - "posterior" (default, hybrid NN/HMM): the classifier's probability itself scores the states,
      log p(x|s) = w * log P(s|x) -- right for a classifier trained with balanced class weights;
      `emission_weight` w is picked from `weights` by F1 on the training sequences (w=inf would
      reproduce the raw classifier; smaller w trusts the transitions more).
    - "gaussian": GaussianHMM with a Gaussian of logit(p) per state estimated from the labelled frames.
    `fit(probs)` without labels: Baum-Welch (GaussianHMM) from a 2-state initialisation.
    """

    def __init__(self, emission: str = "posterior", pseudocount: float = 1.0, min_std: float = 0.3,
                 weights: Sequence[float] = (0.5, 1.0, 2.0, 4.0), seed: int = 0):
        self.emission = emission
        self.pseudocount = pseudocount
        self.min_std = min_std
        self.weights = weights
        self.seed = seed

    def _gaussian_hmm(self, init_params: str, params: str) -> Any:
        from hmmlearn.hmm import GaussianHMM

        return GaussianHMM(n_components=2, covariance_type="diag", algorithm="viterbi",
                           init_params=init_params, params=params, random_state=self.seed, n_iter=50,
                           min_covar=self.min_std ** 2)

    def _fit_unsupervised(self, z: list[np.ndarray]) -> "HMMSmoother":
        hmm = self._gaussian_hmm(init_params="", params="stmc")
        allz = np.concatenate(z)
        hmm.startprob_ = np.array([0.5, 0.5])
        hmm.transmat_ = np.array([[0.9, 0.1], [0.1, 0.9]])
        hmm.means_ = np.array([[np.percentile(allz, 25)], [np.percentile(allz, 75)]])
        hmm.covars_ = np.full((2, 1), max(float(allz.var()), self.min_std ** 2))
        hmm.fit(allz[:, None], lengths=[len(a) for a in z])
        if hmm.means_[0, 0] > hmm.means_[1, 0]:  # keep state 1 = lesion (higher logit)
            perm = [1, 0]
            covars = np.asarray([np.diag(c) for c in hmm.covars_])[perm]
            hmm.startprob_ = hmm.startprob_[perm]
            hmm.transmat_ = hmm.transmat_[perm][:, perm]
            hmm.means_ = hmm.means_[perm]
            hmm.covars_ = covars
        self.hmm_ = hmm
        self.kind_ = "gaussian"
        return self

    def fit(self, prob_seqs: Sequence[Any], label_seqs: Sequence[Any] | None = None) -> "HMMSmoother":
        if self.emission not in ("posterior", "gaussian"):
            raise ValueError(f"emission must be 'posterior' or 'gaussian', got {self.emission!r}")
        probs = _as_list(prob_seqs)
        z = [_logit(p) for p in probs]
        if label_seqs is None:
            return self._fit_unsupervised(z)
        labs = _check_labels(probs, label_seqs)
        c = float(self.pseudocount)
        start = np.full(2, c)
        trans = np.full((2, 2), c)
        for y in labs:
            start[y[0]] += 1
            np.add.at(trans, (y[:-1], y[1:]), 1)
        startprob, transmat = start / start.sum(), trans / trans.sum(axis=1, keepdims=True)
        if self.emission == "posterior":
            best = (-1.0, None)
            for w in self.weights:
                hmm = _posterior_hmm_class()(emission_weight=float(w), random_state=self.seed)
                hmm.startprob_, hmm.transmat_ = startprob, transmat
                pred = [hmm.predict(p[:, None]) for p in probs]
                f1 = sequence_f1(labs, pred)
                if f1 > best[0] + 1e-9:
                    best = (f1, hmm)
            self.hmm_ = best[1]
            self.kind_ = "posterior"
            return self
        allz, ally = np.concatenate(z), np.concatenate(labs)
        means = np.zeros((2, 1))
        var = np.zeros((2, 1))
        for k in (0, 1):
            zk = allz[ally == k]
            if zk.size == 0:  # an unseen state: a weak prior on the matching side
                zk = np.array([-2.0 if k == 0 else 2.0])
            means[k, 0] = zk.mean()
            var[k, 0] = max(float(zk.var()), self.min_std ** 2)
        hmm = self._gaussian_hmm(init_params="", params="")
        hmm.startprob_, hmm.transmat_ = startprob, transmat
        hmm.means_ = means
        hmm.covars_ = var
        self.hmm_ = hmm
        self.kind_ = "gaussian"
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "hmm_"):
            raise RuntimeError("HMMSmoother is not fitted; call fit() first")

    def _obs(self, p: np.ndarray) -> np.ndarray:
        return (p if self.kind_ == "posterior" else _logit(p))[:, None]

    def predict(self, prob_seqs: Sequence[Any]) -> list[np.ndarray]:
        """Viterbi state path (0/1 int64) of every sequence."""
        self._check_fitted()
        return [self.hmm_.predict(self._obs(p)).astype(np.int64) for p in _as_list(prob_seqs)]

    def predict_proba(self, prob_seqs: Sequence[Any]) -> list[np.ndarray]:
        """Posterior probability of the lesion state per frame (forward-backward)."""
        self._check_fitted()
        return [self.hmm_.predict_proba(self._obs(p))[:, 1] for p in _as_list(prob_seqs)]


def frame_features(probs: Sequence[float] | np.ndarray, context: int = 2,
                   position: bool = True) -> list[dict[str, float]]:
    """CRF features of each frame: p, logit(p), neighbours' p at offsets +-1..context (0 past the ends),
    local mean/max, p relative to the sequence (p / max, rank in [0, 1], logit z-scored within the sequence),
    and with `position` the relative position in [0, 1], its square and begin/end flags (with few training
    studies position mostly teaches "lesions are mid-volume", which shifts held-out runs)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = p.size
    z = _logit(p)
    pmax = max(float(p.max()), _EPS)
    rank = np.argsort(np.argsort(p)) / max(t - 1, 1)
    zmu, zsd = float(z.mean()), max(float(z.std()), 0.5)
    feats = []
    for i in range(t):
        f: dict[str, float] = {"bias": 1.0, "p": p[i], "logit": z[i] / 5.0}
        lo, hi = max(0, i - context), min(t, i + context + 1)
        f["local_mean"] = float(p[lo:hi].mean())
        f["local_max"] = float(p[lo:hi].max())
        for k in range(1, context + 1):
            f[f"p[-{k}]"] = p[i - k] if i - k >= 0 else 0.0
            f[f"p[+{k}]"] = p[i + k] if i + k < t else 0.0
        # sequence-relative evidence: held-out studies are often shifted as a whole (a patient whose
        # lesion the classifier scores 0.3 everywhere else scores 0.05), so rank within the study matters
        f["p_over_max"] = p[i] / pmax
        f["rank"] = float(rank[i])
        f["z_seq"] = float((z[i] - zmu) / zsd) / 2.0
        if not position:
            feats.append(f)
            continue
        pos = i / (t - 1) if t > 1 else 0.5
        f["pos"] = pos
        f["pos2"] = (pos - 0.5) ** 2
        f["first"] = float(i == 0)
        f["last"] = float(i == t - 1)
        feats.append(f)
    return feats


class CRFSmoother:
    """Linear-chain CRF (sklearn-crfsuite, L-BFGS with elastic-net `c1`/`c2`) over `frame_features`.

    `threshold=None` decodes with Viterbi; a number labels a frame positive when its marginal lesion
    probability reaches it -- the CRF is trained by likelihood with no class weights, so with ~30%
    positive frames and weak evidence Viterbi says "no lesion" far too often (see `tune_crf`).
    `threshold="prior"` uses the training frames' lesion rate pi: marginal >= pi is the balanced
    (prior-corrected) decision rule, the same one a class-balanced classifier applies at 0.5, and
    needs no tuning. `position=False` drops the position features (see `frame_features`)."""

    def __init__(self, c1: float = 0.05, c2: float = 0.05, max_iterations: int = 200, context: int = 2,
                 threshold: float | str | None = None, position: bool = True):
        if isinstance(threshold, str) and threshold != "prior":
            raise ValueError(f"threshold must be None, a number or 'prior', got {threshold!r}")
        self.threshold = threshold
        self.position = position
        self.c1 = c1
        self.c2 = c2
        self.max_iterations = max_iterations
        self.context = context

    def fit(self, prob_seqs: Sequence[Any], label_seqs: Sequence[Any]) -> "CRFSmoother":
        import sklearn_crfsuite

        probs = _as_list(prob_seqs)
        labs = _check_labels(probs, label_seqs)
        crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=self.c1, c2=self.c2, max_iterations=self.max_iterations,
                                   all_possible_transitions=True)
        crf.fit(self._features(probs), [[str(v) for v in y] for y in labs])
        self.crf_ = crf
        self.threshold_ = float(np.concatenate(labs).mean()) if self.threshold == "prior" else self.threshold
        return self

    def _features(self, probs: list[np.ndarray]) -> list[list[dict[str, float]]]:
        return [frame_features(p, self.context, self.position) for p in probs]

    def _check_fitted(self) -> None:
        if not hasattr(self, "crf_"):
            raise RuntimeError("CRFSmoother is not fitted; call fit() first")

    def predict(self, prob_seqs: Sequence[Any]) -> list[np.ndarray]:
        """0/1 label sequence of every sequence: Viterbi, or marginals >= `threshold` when one is set."""
        self._check_fitted()
        if self.threshold_ is not None:
            return [(m >= self.threshold_).astype(np.int64) for m in self.predict_proba(prob_seqs)]
        out = self.crf_.predict(self._features(_as_list(prob_seqs)))
        return [np.asarray([int(v) for v in y], np.int64) for y in out]

    def predict_proba(self, prob_seqs: Sequence[Any]) -> list[np.ndarray]:
        """Marginal probability of the lesion label per frame."""
        self._check_fitted()
        marg = self.crf_.predict_marginals(self._features(_as_list(prob_seqs)))
        return [np.asarray([m.get("1", 0.0) for m in seq]) for seq in marg]


def slice_feature_matrix(frames: np.ndarray) -> np.ndarray:
    """Fast handcrafted per-slice features (T, F) for a lesion-presence classifier on (T, H, W[, C]) frames.

    Per channel: mean, std, percentiles (50/90/99), fraction above mean+2sd of the slice's
    foreground, and a 4x4 grid of block means -- cheap, and enough for bright-lesion MRI (FLAIR).
    """
    a = np.asarray(frames, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., None]
    t, h, w, c = a.shape
    rows = []
    for i in range(t):
        f = []
        for ch in range(c):
            x = a[i, :, :, ch]
            fg = x[x > 0.02]
            fg = fg if fg.size else x.ravel()
            mu, sd = float(fg.mean()), float(fg.std())
            f += [float(x.mean()), mu, sd, *np.percentile(fg, [50, 90, 99]).tolist(),
                  float(np.mean(fg > mu + 2 * sd)), float(fg.size) / x.size]
            bh, bw = h // 4, w // 4
            f += x[: bh * 4, : bw * 4].reshape(4, bh, 4, bw).mean(axis=(1, 3)).ravel().tolist()
        rows.append(f)
    return np.asarray(rows, np.float32)


def hyperintensity_features(frames: np.ndarray, channel: int = 1, brain_threshold: float = 0.05,
                            levels: Sequence[float] = (0.75, 1.0, 1.5, 2.0, 2.5), sigma: float = 1.0) -> np.ndarray:
    """Per-slice features (T, F) of bright-lesion evidence RELATIVE TO THE WHOLE STACK (unsupervised, per study).

    Intensities of `channel` (FLAIR for LGG) are z-scored against the stack's own brain voxels
    (> `brain_threshold`), so a slice scores by how much brighter-than-this-patient tissue it holds,
    not by how much brain it shows (which only says "mid-volume"). Per level q: fraction of the
    slice's brain above median + q*sd, log pixel count, log largest connected blob; plus left-right
    asymmetry and high z percentiles. Uses no labels, so it is safe on held-out studies.
    """
    from scipy import ndimage as ndi

    a = np.asarray(frames, dtype=np.float32)
    x = a[..., channel] if a.ndim == 4 else a
    brain = x > brain_threshold
    vals = x[brain] if brain.any() else x.ravel()
    med, sd = float(np.median(vals)), float(vals.std()) or 1.0
    rows = []
    for i in range(x.shape[0]):
        s = ndi.gaussian_filter(x[i], sigma)
        b = brain[i]
        nb = max(int(b.sum()), 1)
        f: list[float] = []
        for q in levels:
            hi = (s > med + q * sd) & b
            lab, n = ndi.label(hi)
            big = int(np.bincount(lab.ravel())[1:].max()) if n else 0
            f += [hi.sum() / nb, float(np.log1p(hi.sum())), float(np.log1p(big))]
        asym = s - s[:, ::-1]
        f += [float(np.log1p(np.clip(asym, 0, None)[b].sum())), float(asym[b].std()) if b.any() else 0.0,
              float(((asym > 0.15) & b).sum() / nb)]
        z = (s[b] - med) / sd if b.any() else np.zeros(1)
        f += [float(np.percentile(z, 99)), float(np.percentile(z, 95)), float(z.mean()), nb / x[i].size]
        rows.append(f)
    return np.asarray(rows, np.float32)


def tune_crf(prob_seqs: Sequence[Any], label_seqs: Sequence[Any], c1s: Sequence[float] = (0.0, 0.1, 0.5),
             c2s: Sequence[float] = (0.01, 0.1, 1.0), thresholds: Sequence[float | None] = (None, 0.2, 0.3, 0.4, 0.5),
             n_splits: int = 4, context: int = 2) -> CRFSmoother:
    """CRFSmoother with (c1, c2, threshold) chosen by sequence-grouped cross-validated F1 on the given
    (out-of-fold) training sequences, refitted on all of them; the scores are kept in `.cv_scores_`."""
    probs = _as_list(prob_seqs)
    labs = _check_labels(probs, label_seqs)
    n = len(probs)
    k = max(2, min(n_splits, n))
    folds = [list(range(j, n, k)) for j in range(k)]
    scores: dict[tuple[float, float, float | None], float] = {}
    for c1 in c1s:
        for c2 in c2s:
            preds: dict[float | None, list[Any]] = {t: [None] * n for t in thresholds}
            for te in folds:
                tr = [i for i in range(n) if i not in te]
                crf = CRFSmoother(c1=c1, c2=c2, context=context).fit([probs[i] for i in tr], [labs[i] for i in tr])
                test = [probs[i] for i in te]
                vit, marg = crf.predict(test), crf.predict_proba(test)
                for t in thresholds:
                    for i, v, m in zip(te, vit, marg):
                        preds[t][i] = v if t is None else (m >= t).astype(np.int64)
            for t in thresholds:
                scores[(c1, c2, t)] = sequence_f1(labs, preds[t])
    best = max(scores, key=lambda c: (scores[c], c[1]))
    out = CRFSmoother(c1=best[0], c2=best[1], context=context, threshold=best[2]).fit(probs, labs)
    out.cv_scores_ = scores
    return out


def lesion_pixel_features(frames: np.ndarray, brain_channel: int = 1, brain_threshold: float = 0.05,
                          sigmas: Sequence[float] = (0.0, 1.0, 2.0, 4.0)) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel features (T, H, W, F) of a (T, H, W[, C]) stack, and its brain mask (T, H, W).

    Per channel: the stack-z-scored intensity smoothed in-plane at each of `sigmas`; for
    `brain_channel` (FLAIR for LGG) also its left-right asymmetry at each sigma > 0, a local max and a
    through-plane (neighbouring slices) smoothing. Plus |x - centre|, y, relative slice position and
    distance to the brain edge. Uses no labels, so it is safe on held-out studies.
    """
    from scipy import ndimage as ndi

    a = np.asarray(frames, dtype=np.float32)
    a = a[..., None] if a.ndim == 3 else a
    t, h, w, c = a.shape
    brain_channel = min(brain_channel, c - 1)
    brain = a[..., brain_channel] > brain_threshold
    fs: list[np.ndarray] = []
    for ch in range(c):
        z = zscore_against(a[..., ch], brain)  # per-study normalisation
        for s in sigmas:
            zs = ndi.gaussian_filter(z, (0, s, s)) if s else z
            fs.append(zs)
            if ch == brain_channel and s:
                fs.append(zs - zs[:, :, ::-1])
        if ch == brain_channel:
            fs.append(ndi.maximum_filter(ndi.gaussian_filter(z, (0, 1, 1)), (1, 5, 5)))
            fs.append(ndi.gaussian_filter(z, (1, 2, 2)))
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    fs.append(np.broadcast_to(np.abs(xx - xx.mean()), (t, h, w)))
    fs.append(np.broadcast_to(yy, (t, h, w)))
    fs.append(np.broadcast_to(np.linspace(0, 1, t)[:, None, None], (t, h, w)))
    fs.append(np.stack([ndi.distance_transform_edt(b) for b in brain]) / float(max(h, w)))
    return np.stack(fs, axis=-1).astype(np.float32), brain


class PixelLesionScorer:
    """Per-pixel lesion classifier trained on lesion masks; its probability map summarised per slice.

    Why: slice-level classifiers on 8 training patients mostly learn "mid-volume slice", so their
    errors are whole shifted bumps that no smoother can fix. Pixel supervision gives ~10^5 labelled
    samples instead of ~170 and localises the evidence. `fit` samples at most `max_pixels_per_class`
    lesion and as many non-lesion brain pixels per study for a HistGradientBoostingClassifier;
    `slice_features` returns per slice [peak of the smoothed probability map, log1p(area with
    p > 0.5), log1p(sum of p)] and the same three minus their maximum over the stack (a study whose
    maps are all dim still has a relatively brightest run; every LGG stack holds a tumour).
    `n_threads` caps the OpenMP threads of the booster: on a busy 2-core machine two spinning
    OpenMP threads made a 0.3 s fit take 60-80 s (measured), so the default is 1.
    """

    def __init__(self, max_pixels_per_class: int = 1500, max_iter: int = 60, brain_channel: int = 1,
                 seed: int = 0, n_threads: int | None = 1):
        self.max_pixels_per_class = max_pixels_per_class
        self.max_iter = max_iter
        self.brain_channel = brain_channel
        self.seed = seed
        self.n_threads = n_threads

    def _threads(self) -> Any:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(self.n_threads)

    def _sample(self, feats: np.ndarray, brain: np.ndarray, mask: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(brain.ravel() | mask.ravel())
        m = mask.ravel()[idx]
        k = self.max_pixels_per_class
        pos, neg = idx[m], idx[~m]
        pos = rng.choice(pos, min(pos.size, k), replace=False)
        neg = rng.choice(neg, min(neg.size, k), replace=False)
        sel = np.concatenate([pos, neg])
        return feats.reshape(-1, feats.shape[-1])[sel], mask.ravel()[sel]

    def fit(self, frame_seqs: Sequence[np.ndarray], mask_seqs: Sequence[np.ndarray]) -> "PixelLesionScorer":
        """Train on the pixels of every study in `frame_seqs` with its (T, H, W) lesion masks."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        if len(frame_seqs) != len(mask_seqs) or not frame_seqs:
            raise ValueError("need one mask stack per frame stack (and at least one)")
        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        for frames, masks in zip(frame_seqs, mask_seqs):
            feats, brain = lesion_pixel_features(frames, self.brain_channel)
            m = np.asarray(masks).astype(bool)
            if m.shape != brain.shape:
                raise ValueError(f"mask shape {m.shape} does not match the frames' {brain.shape}")
            x, y = self._sample(feats, brain, m, rng)
            xs.append(x)
            ys.append(y)
        y = np.concatenate(ys)
        if y.all() or not y.any():
            raise ValueError("the training masks need both lesion and non-lesion pixels")
        self.clf_ = HistGradientBoostingClassifier(max_iter=self.max_iter, random_state=self.seed)
        with self._threads():
            self.clf_.fit(np.concatenate(xs), y)
        return self

    def predict_maps(self, frame_seqs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(T, H, W) lesion probability map of every stack (0 outside the brain)."""
        if not hasattr(self, "clf_"):
            raise RuntimeError("PixelLesionScorer is not fitted; call fit() first")
        out = []
        for frames in frame_seqs:
            feats, brain = lesion_pixel_features(frames, self.brain_channel)
            with self._threads():
                p = self.clf_.predict_proba(feats.reshape(-1, feats.shape[-1]))[:, 1].reshape(brain.shape)
            out.append((p * brain).astype(np.float32))
        return out

    def slice_features(self, frame_seqs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(T, 6) per-slice summaries of the probability map: smoothed peak, log area > 0.5, log total,
        then those three relative to their maximum over the stack."""
        from scipy import ndimage as ndi

        rows = []
        for p in self.predict_maps(frame_seqs):
            peak = ndi.gaussian_filter(p, (0, 1, 1)).max(axis=(1, 2))
            f = np.stack([peak, np.log1p((p > 0.5).sum(axis=(1, 2))), np.log1p(p.sum(axis=(1, 2)))], axis=1)
            rows.append(np.hstack([f, f - f.max(axis=0, keepdims=True)]).astype(np.float32))
        return rows


def out_of_fold_slice_features(frame_seqs: Sequence[np.ndarray], mask_seqs: Sequence[np.ndarray],
                               n_splits: int = 4, **scorer_kw: Any) -> list[np.ndarray]:
    """Per-slice `PixelLesionScorer` features of every study from a scorer trained on the OTHER folds' studies
    (studies dealt round-robin into `n_splits` folds): honest inputs for fitting a slice classifier and smoothers."""
    n = len(frame_seqs)
    k = max(2, min(n_splits, n))
    out: list[Any] = [None] * n
    for j in range(k):
        te = list(range(j, n, k))
        tr = [i for i in range(n) if i not in te]
        scorer = PixelLesionScorer(**scorer_kw).fit([frame_seqs[i] for i in tr], [mask_seqs[i] for i in tr])
        for i, f in zip(te, scorer.slice_features([frame_seqs[i] for i in te])):
            out[i] = f
    return out


def slice_prf(label_seqs: Sequence[Any], pred_seqs: Sequence[Any]) -> dict[str, float | int]:
    """Per-slice precision, recall and F1 of the positive class pooled over all slices (F1 = 1 when there is
    neither a positive slice nor a positive prediction), with the counts."""
    y = np.concatenate([np.asarray(a).ravel() for a in label_seqs]).astype(bool)
    p = np.concatenate([np.asarray(a).ravel() for a in pred_seqs]).astype(bool)
    tp, fp, fn = int(np.sum(y & p)), int(np.sum(~y & p)), int(np.sum(y & ~p))
    return {"precision": tp / (tp + fp) if tp + fp else (1.0 if not fn else 0.0),
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
            "tp": tp, "fp": fp, "fn": fn, "n": int(y.size), "positive": int(y.sum())}


def stack_frames(frames: np.ndarray, size: int = 64, channels: int = 3) -> np.ndarray:
    """A raw slice stack (T, H, W[, C]) as the slice labeller reads it: (T, size, size, channels) float32 in [0, 1]
    (integer data by its dtype range, float data min-max over the stack; grey repeated to `channels`, alpha dropped,
    extra channels cut), each slice resized to size x size."""
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"expected slices (T, H, W[, C]), got shape {np.asarray(frames).shape}")
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        top = 1.0 if a.dtype == bool else float(np.iinfo(a.dtype).max)
        x = a.astype(np.float32) / top
    else:
        x = np.nan_to_num(a.astype(np.float32))
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    c = x.shape[-1]
    if c == 4 or c == 2:  # grey+alpha / RGBA
        x = x[..., : c - 1]
    if x.shape[-1] == 1:
        x = np.repeat(x, channels, axis=-1)
    x = x[..., :channels]
    if x.shape[1:3] != (size, size):
        from skimage.transform import resize

        x = np.stack([resize(s, (size, size, x.shape[-1]), order=1, anti_aliasing=True, preserve_range=True)
                      for s in x]).astype(np.float32)
    return x.astype(np.float32)


def resize_masks(masks: np.ndarray, size: int = 64) -> np.ndarray:
    """(T, H, W) lesion masks resized (nearest) to (T, size, size) bool."""
    m = np.asarray(masks).astype(bool)
    if m.shape[1:3] == (size, size):
        return m
    from skimage.transform import resize

    return np.stack([resize(s.astype(np.uint8), (size, size), order=0, anti_aliasing=False, preserve_range=True)
                     for s in m]).astype(bool)
