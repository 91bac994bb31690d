"""Slice labellers saved without pickle: every fitted part as plain numbers (JSON-able dicts, numeric arrays for
`np.savez(..., allow_pickle=False)`) and rebuilt from them, predicted with numpy. A RUN folder never holds
executable objects. (Split from `slice_labelling.py`, which fits the parts.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.classic.slice_labelling import CRFSmoother, HMMSmoother, PixelLesionScorer, _posterior_hmm_class



_TREE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf", "value")


class TreeEnsemble:
    """A binary gradient-boosted tree ensemble (scikit-learn's HistGradientBoostingClassifier) as plain arrays,
    predicted with numpy: raw score = baseline + sum of each tree's leaf value; probability = sigmoid(raw).

    `from_hgb(clf)` reads a fitted classifier's trees (numerical features only); `to_arrays()` / `from_arrays()`
    round-trip through a dict of numeric arrays (np.savez / np.load(allow_pickle=False))."""

    def __init__(self, baseline: float, nodes: dict[str, np.ndarray], offsets: np.ndarray):
        self.baseline = float(baseline)
        self.nodes = nodes  # concatenated node columns of all trees
        self.offsets = np.asarray(offsets, np.int64)  # tree k's nodes are nodes[offsets[k]:offsets[k + 1]]

    @classmethod
    def from_hgb(cls, clf: Any) -> "TreeEnsemble":
        if getattr(clf, "n_trees_per_iteration_", 1) != 1:
            raise ValueError("only binary gradient-boosting classifiers can be exported")
        trees = [it[0].nodes for it in clf._predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise ValueError("categorical splits cannot be exported")
        nodes = {f: np.concatenate([t[f] for t in trees]) for f in _TREE_FIELDS}
        offsets = np.cumsum([0] + [len(t) for t in trees])
        return cls(float(np.ravel(clf._baseline_prediction)[0]), nodes, offsets)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {f"{prefix}{f}": np.asarray(v) for f, v in self.nodes.items()}
        out[f"{prefix}offsets"] = self.offsets
        out[f"{prefix}baseline"] = np.asarray([self.baseline])
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str = "") -> "TreeEnsemble":
        nodes = {f: np.asarray(arrays[f"{prefix}{f}"]) for f in _TREE_FIELDS}
        return cls(float(np.asarray(arrays[f"{prefix}baseline"]).ravel()[0]), nodes,
                   np.asarray(arrays[f"{prefix}offsets"]))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        rows = np.arange(n)
        feat, thr = self.nodes["feature_idx"], self.nodes["num_threshold"]
        mleft, left, right = self.nodes["missing_go_to_left"].astype(bool), self.nodes["left"], self.nodes["right"]
        leaf, value = self.nodes["is_leaf"].astype(bool), self.nodes["value"]
        raw = np.full(n, self.baseline)
        for a in self.offsets[:-1]:
            node = np.zeros(n, np.int64)
            active = rows
            while active.size:
                g = a + node[active]
                x = X[active, feat[g]]
                go_left = np.where(np.isnan(x), mleft[g], x <= thr[g])
                node[active] = np.where(go_left, left[g], right[g]).astype(np.int64)
                active = active[~leaf[a + node[active]]]
            raw += value[a + node]
        return raw

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - p, p], axis=1)


def export_scorer(scorer: PixelLesionScorer) -> dict[str, np.ndarray]:
    """A fitted `PixelLesionScorer` as numeric arrays (for np.savez); `load_scorer` rebuilds it."""
    if not hasattr(scorer, "clf_"):
        raise RuntimeError("PixelLesionScorer is not fitted; call fit() first")
    trees = scorer.clf_ if isinstance(scorer.clf_, TreeEnsemble) else TreeEnsemble.from_hgb(scorer.clf_)
    out = trees.to_arrays("tree_")
    out["settings"] = np.asarray([scorer.max_pixels_per_class, scorer.max_iter, scorer.brain_channel, scorer.seed],
                                 np.int64)
    return out


def load_scorer(arrays: Any) -> PixelLesionScorer:
    """The `PixelLesionScorer` saved by `export_scorer` (its booster predicted by `TreeEnsemble`, no pickle)."""
    mpc, max_iter, brain_channel, seed = (int(v) for v in np.asarray(arrays["settings"]).ravel()[:4])
    scorer = PixelLesionScorer(max_pixels_per_class=mpc, max_iter=max_iter, brain_channel=brain_channel, seed=seed)
    scorer.clf_ = TreeEnsemble.from_arrays(arrays, "tree_")
    return scorer


def export_linear(model: Any) -> dict[str, Any]:
    """A fitted (StandardScaler +) LogisticRegression pipeline as a JSON-able dict."""
    steps = [s for _, s in model.steps] if hasattr(model, "steps") else [model]
    scaler = steps[0] if len(steps) > 1 else None
    lr = steps[-1]
    return {"mean": scaler.mean_.tolist() if scaler is not None else None,
            "scale": scaler.scale_.tolist() if scaler is not None else None,
            "coef": np.asarray(lr.coef_).ravel().tolist(), "intercept": float(np.ravel(lr.intercept_)[0])}


class LinearSliceClassifier:
    """`export_linear`'s dict as a predictor: P(lesion | slice features) = sigmoid(w . (x - mean) / scale + b)."""

    def __init__(self, params: dict[str, Any]):
        self.coef = np.asarray(params["coef"], np.float64)
        self.intercept = float(params["intercept"])
        self.mean = None if params.get("mean") is None else np.asarray(params["mean"], np.float64)
        self.scale = None if params.get("scale") is None else np.asarray(params["scale"], np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X, np.float64)
        if self.mean is not None:
            x = (x - self.mean) / self.scale
        p = 1.0 / (1.0 + np.exp(-(x @ self.coef + self.intercept)))
        return np.stack([1.0 - p, p], axis=1)


def export_smoother(smoother: Any) -> dict[str, Any]:
    """A fitted `HMMSmoother` or `CRFSmoother` as a JSON-able dict; `load_smoother` rebuilds it."""
    if isinstance(smoother, HMMSmoother):
        smoother._check_fitted()
        h = smoother.hmm_
        out: dict[str, Any] = {"type": "hmm", "kind": smoother.kind_, "startprob": h.startprob_.tolist(),
                               "transmat": h.transmat_.tolist()}
        if smoother.kind_ == "posterior":
            out["emission_weight"] = float(h.emission_weight)
        else:
            out["means"] = np.asarray(h.means_).tolist()
            out["covars"] = np.asarray(h._covars_).reshape(2, -1).tolist()  # diagonal variances per state
        return out
    if isinstance(smoother, CRFSmoother):
        smoother._check_fitted()
        if isinstance(smoother.crf_, LinearChainCRF):
            crf_params = smoother.crf_.to_dict()
        else:
            crf_params = LinearChainCRF.from_crfsuite(smoother.crf_).to_dict()
        return {"type": "crf", "c1": smoother.c1, "c2": smoother.c2, "context": smoother.context,
                "position": smoother.position, "threshold": smoother.threshold_, **crf_params}
    raise TypeError(f"cannot export a {type(smoother).__name__}")


def load_smoother(params: dict[str, Any]) -> Any:
    """The smoother `export_smoother` saved."""
    kind = params.get("type")
    if kind == "hmm":
        s = HMMSmoother(emission=params["kind"])
        if params["kind"] == "posterior":
            hmm = _posterior_hmm_class()(emission_weight=float(params["emission_weight"]))
        else:
            hmm = s._gaussian_hmm(init_params="", params="")
            hmm.means_ = np.asarray(params["means"], np.float64)
            hmm.covars_ = np.asarray(params["covars"], np.float64)
        hmm.startprob_ = np.asarray(params["startprob"], np.float64)
        hmm.transmat_ = np.asarray(params["transmat"], np.float64)
        s.hmm_, s.kind_ = hmm, params["kind"]
        return s
    if kind == "crf":
        s = CRFSmoother(c1=params["c1"], c2=params["c2"], context=int(params["context"]),
                        position=bool(params["position"]))
        s.crf_ = LinearChainCRF.from_dict(params)
        s.threshold_ = None if params.get("threshold") is None else float(params["threshold"])
        return s
    raise ValueError(f"unknown smoother type {kind!r}")


class LinearChainCRF:
    """A trained crfsuite linear-chain CRF as weights, decoded with numpy (Viterbi and forward-backward marginals),
    with the `predict` / `predict_marginals` interface of sklearn_crfsuite.CRF on lists of feature-dict sequences."""

    def __init__(self, labels: list[str], state: dict[str, dict[str, float]], transitions: list[list[float]]):
        self.labels = [str(v) for v in labels]
        self.state = state  # attribute -> {label: weight}
        self.trans = np.asarray(transitions, np.float64)

    @classmethod
    def from_crfsuite(cls, crf: Any) -> "LinearChainCRF":
        labels = [str(v) for v in crf.classes_]
        state: dict[str, dict[str, float]] = {}
        for (attr, lab), w in crf.state_features_.items():
            state.setdefault(str(attr), {})[str(lab)] = float(w)
        trans = np.zeros((len(labels), len(labels)))
        for (a, b), w in crf.transition_features_.items():
            trans[labels.index(str(a)), labels.index(str(b))] = float(w)
        return cls(labels, state, trans.tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "state_features": self.state, "transitions": self.trans.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinearChainCRF":
        return cls(d["labels"], d["state_features"], d["transitions"])

    def _unary(self, feats: list[dict[str, float]]) -> np.ndarray:
        u = np.zeros((len(feats), len(self.labels)))
        for t, f in enumerate(feats):
            for attr, v in f.items():
                ws = self.state.get(attr)
                if ws:
                    for j, lab in enumerate(self.labels):
                        u[t, j] += float(v) * ws.get(lab, 0.0)
        return u

    def _marginals(self, feats: list[dict[str, float]]) -> np.ndarray:
        from scipy.special import logsumexp

        u = self._unary(feats)
        t = len(u)
        fw = np.zeros_like(u)
        bw = np.zeros_like(u)
        fw[0] = u[0]
        for i in range(1, t):
            fw[i] = u[i] + logsumexp(fw[i - 1][:, None] + self.trans, axis=0)
        for i in range(t - 2, -1, -1):
            bw[i] = logsumexp(self.trans + (u[i + 1] + bw[i + 1])[None, :], axis=1)
        m = fw + bw
        return np.exp(m - logsumexp(m, axis=1, keepdims=True))

    def _viterbi(self, feats: list[dict[str, float]]) -> list[str]:
        u = self._unary(feats)
        t = len(u)
        score = u[0].copy()
        back = np.zeros((t, len(self.labels)), np.int64)
        for i in range(1, t):
            cand = score[:, None] + self.trans
            back[i] = cand.argmax(axis=0)
            score = cand.max(axis=0) + u[i]
        path = [int(score.argmax())]
        for i in range(t - 1, 0, -1):
            path.append(int(back[i, path[-1]]))
        return [self.labels[j] for j in path[::-1]]

    def predict(self, X: list[list[dict[str, float]]]) -> list[list[str]]:
        return [self._viterbi(f) for f in X]

    def predict_marginals(self, X: list[list[dict[str, float]]]) -> list[list[dict[str, float]]]:
        return [[dict(zip(self.labels, row.tolist())) for row in self._marginals(f)] for f in X]


