"""`run.json`, typed: what a trained RUN folder is (kind, outputs, preprocessing, training record).

Schema-versioned: version 2 (this module) says `kind` (classifier / segmenter / sequence_classifier /
slice_labeller) apart from
`task` (the output: binary / multiclass / multilabel; a segmenter is a per-pixel binary task) and keeps the
segmenter's inference settings in their own table. Version-1 files (no `schema_version`; a segmenter wrote
`"task": "segmentation"` and its settings at the top level) load unchanged in meaning. It lives in `io` because
every layer reads it: training writes it, the predictors, reports and the service read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from meddx.errors import InputError
from meddx.utils import atomic_write_json, read_json

SCHEMA_VERSION = 2
RUN_FILE = "run.json"
KINDS = ("classifier", "segmenter", "sequence_classifier", "slice_labeller")
TASKS = ("binary", "multiclass", "multilabel")


@dataclass
class SegmentationSettings:
    """How a segmenter predicts: whole (resized) images or sliding windows, and the mask post-processing."""

    inference: str = "resize"  # "resize" (2D) or "sliding_window" (3D patches)
    patch: list[int] | None = None
    overlap: float = 0.5
    min_size: int = 0  # components smaller than this (voxels) are dropped
    keep_largest: int | None = None
    stack_min_fraction: float = 0.0  # 2D: per patient/volume, 3D components < this x the largest are dropped


@dataclass
class SequenceSettings:
    """How a sequence classifier samples a study's frames."""

    frames: int = 16
    sampling: str = "uniform"  # uniform | all
    frame_size: int | None = None


@dataclass
class SliceLabellingSettings:
    """How a slice labeller reads a stack and smooths its per-slice lesion probabilities along it."""

    smoother: str = "hmm"  # hmm | crf
    frame_size: int = 64  # slices resized to frame_size x frame_size
    channels: int = 3  # grey stacks repeated to this many channels
    brain_channel: int = 1  # the channel whose foreground is the brain (FLAIR of LGG's pre/FLAIR/post)
    raw_threshold: float = 0.5  # a slice is positive before smoothing when its probability reaches this
    scorer_file: str = "slice_scorer.npz"  # per-pixel booster, numeric arrays (np.load allow_pickle=False)
    model_file: str = "slice_labeller.json"  # per-slice classifier and smoother parameters


@dataclass
class RunInfo:
    """Everything `evaluate` / `predict` / `report` need besides the weights (see the module docstring)."""

    kind: str
    model: str
    task: str
    class_names: list[str]
    spatial_ndim: int
    input_shape: list[Any]
    preprocessing: dict[str, Any]
    threshold: float | None = None
    positive_class: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    val_metrics: dict[str, Any] = field(default_factory=dict)
    epochs_run: int | None = None
    best_epoch: int | None = None
    training_seconds: float | None = None
    meddx_version: str = ""
    created: str = ""
    segmentation: SegmentationSettings | None = None
    sequence: SequenceSettings | None = None
    slice_labelling: SliceLabellingSettings | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.kind == "segmenter" and self.segmentation is None:
            self.segmentation = SegmentationSettings()
        if self.kind == "slice_labeller" and self.slice_labelling is None:
            self.slice_labelling = SliceLabellingSettings()

    @property
    def is_segmenter(self) -> bool:
        return self.kind == "segmenter"

    @property
    def source(self) -> str:
        """The training DATA's path as recorded ("" when unknown)."""
        return str(self.data.get("source", ""))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (version 2); unknown keys read from an older or newer file are written back."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["segmentation"] = asdict(self.segmentation) if self.segmentation else None
        out["sequence"] = asdict(self.sequence) if self.sequence else None
        if self.slice_labelling is not None:  # absent otherwise: files of the other kinds stay as they were
            out["slice_labelling"] = asdict(self.slice_labelling)
        else:
            out.pop("slice_labelling", None)
        return {**self.extra, **out}

    def write(self, run_dir: str | Path) -> Path:
        """Write RUN/run.json atomically (training writes it last: its presence marks a finished RUN)."""
        return atomic_write_json(Path(run_dir) / RUN_FILE, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunInfo":
        """Parse version 1 or 2; unknown keys go to `extra`."""
        d = dict(raw)
        version = int(d.pop("schema_version", 1) or 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"run.json schema version {version} is newer than this meddx reads ({SCHEMA_VERSION})")
        kind = d.pop("kind", None) or ("segmenter" if d.get("task") == "segmentation" else "classifier")
        task = d.pop("task", "binary")
        if task == "segmentation":
            task = "binary"
        seg = d.pop("segmentation", None)
        if kind == "segmenter" and seg is None:  # version 1: settings at the top level
            pp = d.pop("postprocess", None) or {}
            seg = {"inference": d.pop("inference", "resize"), "patch": d.pop("patch", None),
                   "overlap": d.pop("overlap", 0.5), "min_size": int(pp.get("min_size") or 0),
                   "keep_largest": pp.get("keep_largest"),
                   "stack_min_fraction": float(pp.get("stack_min_fraction") or 0.0)}
        seq = d.pop("sequence", None)
        sl = d.pop("slice_labelling", None)
        known = {f.name for f in fields(cls)} - {"kind", "task", "segmentation", "sequence", "slice_labelling",
                                                 "extra", "schema_version"}
        values = {k: d.pop(k) for k in list(d) if k in known and d[k] is not None}
        return cls(kind=kind, task=task, **values,
                   segmentation=SegmentationSettings(**seg) if seg else None,
                   sequence=SequenceSettings(**seq) if seq else None,
                   slice_labelling=SliceLabellingSettings(**sl) if sl else None, extra=d)

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunInfo":
        """RUN/run.json, with a one-line error naming the folder when it is missing or malformed."""
        p = Path(run_dir)
        try:
            raw = read_json(p / RUN_FILE)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {RUN_FILE}: {exc}", p) from None
        if not isinstance(raw, dict):
            raise InputError(f"{RUN_FILE} is not a JSON object", p)
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{RUN_FILE} is not a meddx run description: {exc}", p) from None
