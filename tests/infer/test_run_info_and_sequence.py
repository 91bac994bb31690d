"""RunInfo (run.json schema v2, v1 files still load) and the SequenceClassifier on a frame sequence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.errors import InputError
from meddx.io.run_info import SCHEMA_VERSION, RunInfo

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def test_version_1_files_load_with_their_meaning() -> None:
    raw = json.loads((RUNS / "demo_seg" / "run.json").read_text())
    assert "schema_version" not in raw and raw["task"] == "segmentation"  # written before the redesign
    info = RunInfo.from_dict(raw)
    assert info.kind == "segmenter" and info.task == "binary" and info.is_segmenter
    assert info.segmentation.stack_min_fraction == raw["postprocess"]["stack_min_fraction"]
    assert info.segmentation.min_size == raw["postprocess"]["min_size"]
    assert info.segmentation.inference == raw["inference"]
    cls = RunInfo.read(RUNS / "breast_cls")
    assert cls.kind == "classifier" and cls.task == "binary" and cls.threshold is not None


def test_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    raw = json.loads((RUNS / "demo_cls" / "run.json").read_text())
    raw["something_new"] = {"a": 1}
    info = RunInfo.from_dict(raw)
    info.write(tmp_path)
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["schema_version"] == SCHEMA_VERSION and again["something_new"] == {"a": 1}
    assert RunInfo.from_dict(again) == info


@pytest.mark.parametrize("raw, problem", [
    ({"schema_version": 99, "kind": "classifier"}, "newer"),
    ({"kind": "teapot", "task": "binary", "model": "cnn", "class_names": ["a", "b"], "spatial_ndim": 2,
      "input_shape": [8, 8, 1], "preprocessing": {}}, "kind must be one of"),
    ({"kind": "classifier", "task": "binary"}, "run description"),
    ([1, 2], "not a JSON object"),
])
def test_bad_run_json_is_one_clear_error(tmp_path: Path, raw: object, problem: str) -> None:
    (tmp_path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=problem) as e:
        RunInfo.read(tmp_path)
    assert "\n" not in str(e.value)


def test_sequence_classifier_predicts_with_frame_importance(tmp_path: Path) -> None:
    import meddx
    from meddx.infer import SequenceClassifier
    from meddx.io.image import Image
    from meddx.io.run_info import SequenceSettings
    from meddx.models.registry import build_model
    from meddx.transforms.preprocess import Preprocessing

    prep = Preprocessing(spatial_ndim=2, image_size=16, channels=1, intensity="minmax")
    model = build_model("lstm", (None, 16, 16, 1), 2, task="binary", filters=[4, 8], rnn_units=4)
    model.save(tmp_path / "model.keras")
    RunInfo(kind="sequence_classifier", model="lstm", task="binary", class_names=["regular", "covid"],
            spatial_ndim=2, input_shape=[None, 16, 16, 1], preprocessing=prep.get_config(), threshold=0.5,
            positive_class="covid", sequence=SequenceSettings(frames=8, sampling="uniform")).write(tmp_path)
    clf = meddx.load(tmp_path)
    assert isinstance(clf, SequenceClassifier)
    rng = np.random.default_rng(0)
    video = Image(array=rng.random((21, 30, 40)).astype(np.float32), spatial_ndim=2, is_sequence=True)
    pred = clf.predict(video)
    assert set(pred.probabilities) == {"regular", "covid"}
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-6
    assert pred.frame_importance.shape == (21,) and abs(pred.frame_importance.sum() - 1) < 1e-5
    assert (pred.frame_importance > 0).sum() == 8  # eight sampled frames carry the weight
    assert len(pred.key_slices) == 3 and all(pred.frame_importance[k] > 0 for k in pred.key_slices)
    short = Image(array=rng.random((3, 30, 40)).astype(np.float32), spatial_ndim=2, is_sequence=True)
    x, mask, idx = clf.frames_of(short)
    assert x.shape[:2] == (1, 8) and mask.sum() == 8  # uniform sampling repeats frames of a short clip
    with pytest.raises(meddx.MeddxError, match="not a frame sequence"):
        clf.predict(Image(array=np.zeros((30, 40), np.float32)))
