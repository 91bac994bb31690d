"""The Python API (re-exported by `meddx`): train, load, evaluate in memory, with a RUN folder optional."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from meddx.train.config import TrainConfig


def train(data: Any, config: TrainConfig | None = None, out: str | Path | None = None, overwrite: bool = False,
          **settings: Any) -> Any:
    """Train on DATA (a path or a `Dataset`) and return the in-memory predictor.

    `config` and/or keyword `settings` (TrainConfig fields, e.g. `epochs=20`) choose the recipe; `out` keeps the
    RUN folder (without it the RUN lives in a temporary folder that is removed once the model is loaded). What is
    trained is decided as `meddx train` decides (`meddx.app.common.choose_trainer`): a segmenter, a sequence
    classifier (`model="lstm"` etc., or sequence data with no model named) or an image classifier."""
    from meddx.app.common import choose_trainer
    from meddx.infer import load

    cfg = (config or TrainConfig()).updated(settings, source="train()")
    fit, cfg = choose_trainer(data, cfg, settings.get("model"))
    if out is not None:
        fit(data, out, cfg, overwrite=overwrite, verbose=0)
        return load(out)
    with tempfile.TemporaryDirectory(prefix="meddx-run-") as tmp:
        fit(data, tmp, cfg, overwrite=True, verbose=0)
        predictor = load(tmp)
        predictor.path = None
        return predictor


def evaluate(predictor: Any, data: Any, split: str = "test", out: str | Path | None = None) -> dict[str, Any]:
    """The metrics `meddx evaluate` writes to metrics.json, for a predictor on one split of DATA (plots go to
    `out` when given, else to a temporary folder that is removed); classifier, segmenter and sequence classifier
    predictors each get their own evaluation (`meddx.app.common.evaluator_for`)."""
    from meddx.app.common import evaluator_for

    run = evaluator_for(predictor)
    if out is not None:
        return run(predictor, data, out, split=split)
    with tempfile.TemporaryDirectory(prefix="meddx-eval-") as tmp:
        return run(predictor, data, tmp, split=split)
