"""Training configuration: defaults, a JSON/TOML config file, and command-line overrides."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from meddx.errors import ConfigError


# names of meddx.train.segmentation.SEGMENTATION_LOSSES
SEG_LOSSES = ("dice_bce", "lesion_dice_bce", "batch_dice_bce", "tversky_bce")
# meddx.data.sequences.SAMPLING_MODES, in the order the CLI offers them
FRAME_SAMPLINGS = ("uniform", "all")
TASKS = ("classification", "segmentation", "slice-labelling")
SMOOTHERS = ("hmm", "crf")  # slice labelling: how per-slice probabilities are smoothed along the stack


@dataclass
class TrainConfig:
    """Every knob of a training run; `None` means "choose from the data" (recorded in run.json)."""

    model: str = "cnn"
    task: str = "classification"  # or "segmentation", "slice-labelling" (per-slice lesion labels along a stack)
    epochs: int | None = None  # None: chosen from the dataset size (see `auto_epochs`)
    batch_size: int | None = None  # None: the recipe's (CLASSIFIER_DEFAULTS, SLICE_STACK_SEGMENTATION_DEFAULTS)
    learning_rate: float | None = None  # None: the recipe's, as batch_size
    weight_decay: float = 1e-4
    image_size: int | None = None  # None: the data's native size, capped by the model's default
    channels: int | None = None  # None: from the data
    select_channels: list[int] | None = None  # keep only these input channels (e.g. [1]: FLAIR of LGG's 3)
    intensity: str | None = None  # None: "scale255" for 8-bit arrays, "minmax" for files
    augment: str = "flip"  # none | flip | light | strong (measured: flips win at 28 px)
    class_weights: bool | None = None  # None: off for image classifiers, on for sequences (`class_weights_for`)
    members: int | None = None  # image classifiers: an ensemble of this many copies of the model trained side by
    # side (models/ensemble.py); None: `ensemble_members` (3 for MedMNIST-sized data, else 1)
    patience: int = 25  # early stopping on validation AUC
    val_fraction: float | None = None  # None: the recipe's (VAL_FRACTION; 0 for slice-stack segmentation)
    test_fraction: float = 0.15
    seed: int = 0
    max_minutes: float | None = None  # wall-clock budget; training stops cleanly when exceeded
    jit_compile: bool = False
    dropout: float = 0.3
    label_smoothing: float = 0.0  # classifiers: target 1 - e on the true class, e spread over all classes
    channel_dropout: float = 0.0  # segmentation 2D: zero one random input channel with this probability
    lesion_fade: float | None = None  # segmentation 2D: with this probability cut a training lesion's contrast by
    # 0-90 %; None: the recipe's (0.5 for slice stacks, else 0)
    patch_size: int | None = None  # segmentation 2D: train on random crops of this side, predict whole images;
    # 0: whole images; None: the recipe's (128 px crops of >= 256 px slice stacks, else whole images)
    stack_min_fraction: float | None = None  # segmentation 2D: per patient, drop 3D components < this x the largest;
    # None: the recipe's (0.25 for slice stacks, else 0)
    seg_loss: str = "dice_bce"  # segmentation: one of SEG_LOSSES (the losses are described in `meddx train --help`)
    frames: int = 16  # sequence models: frames sampled per study (video, cine, slice stack)
    frame_sampling: str = "uniform"  # sequence models: "uniform" (`frames` evenly spaced) or "all" (every frame)
    smoother: str = "hmm"  # slice labelling: "hmm" (2-state HMM, Viterbi) or "crf" (linear-chain CRF)
    devices: str | None = None  # data-parallel training: "N" devices or "all" (MirroredStrategy); None = one
    allow_rare_classes: bool = False  # train even when a class has too few cases to learn or validate
    threads: int | None = None  # TF intra-op threads; None = all cores
    model_options: dict[str, Any] | None = None  # extra model-builder arguments (e.g. {"pooling": "max"})

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON or TOML file of TrainConfig fields (unknown keys are an error)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file does not exist")
        try:
            text = p.read_text(encoding="utf-8")
            data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{p}: cannot parse config: {exc}") from None
        if isinstance(data, dict) and "train" in data and isinstance(data["train"], dict):
            data = data["train"]
        return cls().updated(data, source=str(p))

    def updated(self, values: dict[str, Any], source: str = "options") -> "TrainConfig":
        """A copy with `values` applied; `None` values leave the field unchanged."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for k, v in values.items():
            if v is not None and not _type_ok(v, str(known[k].type)):
                raise ConfigError(f"{source}: {k} must be {known[k].type}, got {v!r}")
        data = asdict(self)
        data.update({k: v for k, v in values.items() if v is not None})
        cfg = TrainConfig(**data)
        try:
            cfg.validate()
        except ConfigError as exc:  # a value from a config file: the error names the file
            if source == "options":
                raise
            raise ConfigError(f"{source}: {exc}") from None
        return cfg

    def validate(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.augment not in ("none", "flip", "light", "strong"):
            raise ConfigError(f"augment must be none, flip, light or strong, got {self.augment!r}")
        if self.seg_loss not in SEG_LOSSES:
            raise ConfigError(f"seg_loss must be {' or '.join(SEG_LOSSES)}, got {self.seg_loss!r}")
        if not 0 <= self.channel_dropout < 1:
            raise ConfigError(f"channel_dropout must be in [0, 1), got {self.channel_dropout}")
        if self.lesion_fade is not None and not 0 <= self.lesion_fade <= 1:
            raise ConfigError(f"lesion_fade must be in [0, 1], got {self.lesion_fade}")
        if self.stack_min_fraction is not None:
            check_stack_min_fraction(self.stack_min_fraction)
        if self.patch_size and not 16 <= self.patch_size <= 1024:
            raise ConfigError(f"patch_size must be 0 (whole images) or between 16 and 1024, got {self.patch_size}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be {', '.join(TASKS[:-1])} or {TASKS[-1]}, got {self.task!r}")
        if self.smoother not in SMOOTHERS:
            raise ConfigError(f"smoother must be {' or '.join(SMOOTHERS)}, got {self.smoother!r}")
        if self.task == "classification" and (self.channel_dropout or self.lesion_fade or self.seg_loss != "dice_bce"
                                              or self.patch_size or self.stack_min_fraction):
            raise ConfigError("channel_dropout, lesion_fade, patch_size, seg_loss and stack_min_fraction apply to "
                              "--task segmentation only")
        if self.members is not None and not 1 <= self.members <= 16:
            raise ConfigError(f"members must be between 1 and 16, got {self.members}")
        if self.members not in (None, 1) and self.task != "classification":
            raise ConfigError("members (an ensemble) applies to --task classification only")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.task == "segmentation":
            raise ConfigError("label_smoothing applies to classifiers (segmentation has its own seg_loss)")
        if self.model_options is not None and not isinstance(self.model_options, dict):
            raise ConfigError(f"model_options must be a table/dict of builder arguments, got {self.model_options!r}")
        if not 1 <= self.frames <= 4096:
            raise ConfigError(f"frames must be between 1 and 4096, got {self.frames}")
        if self.frame_sampling not in FRAME_SAMPLINGS:
            raise ConfigError(f"frame_sampling must be {' or '.join(FRAME_SAMPLINGS)}, got {self.frame_sampling!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        if self.image_size is not None and not 8 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be between 8 and 1024, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _type_ok(value: Any, annotation: str) -> bool:
    """Whether a setting's value fits its annotation ('int | None', 'list[int] | None', ...): a config file saying
    epochs = "many" is a ConfigError, not a TypeError deep inside training."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list, tuple),
             "dict": (dict,)}
    parts = [a.strip().split("[")[0] for a in annotation.split("|") if a.strip() != "None"]
    if isinstance(value, bool) and "bool" not in parts:
        return False
    return any(isinstance(value, kinds.get(t, (object,))) for t in parts)


# What an unset (None) setting becomes, per recipe. Classifiers (images and sequences) and 2D segmentation of
# single images (e.g. dermoscopy) keep the settings they were measured with; 2D segmentation of slice stacks (several
# slices per patient, e.g. LGG MR) takes the recipe of benchmarks/segmentation_lgg.py, chosen by patient-grouped
# cross-validation: all channels z-scored over the head, 128 px crops of 256 px slices, lesion fade, and each
# patient's slices post-processed as one stack (README, "LGG segmentation").
VAL_FRACTION = 0.15  # patients held out to pick the best epoch (and calibrate), unless the recipe says otherwise
CLASSIFIER_DEFAULTS: dict[str, Any] = {"batch_size": 64, "learning_rate": 2e-3, "val_fraction": VAL_FRACTION}
IMAGE_SEGMENTATION_DEFAULTS: dict[str, Any] = {**CLASSIFIER_DEFAULTS, "lesion_fade": 0.0, "patch_size": 0,
                                               "stack_min_fraction": 0.0}
SLICE_STACK_SEGMENTATION_DEFAULTS: dict[str, Any] = {
    "batch_size": 8, "learning_rate": 3e-3, "lesion_fade": 0.5, "stack_min_fraction": 0.25,
    "intensity": "zscore:foreground,channel",
    # no validation patients: every non-test patient trains and the cosine schedule's last epoch is kept, the
    # protocol benchmarks/segmentation_lgg.py measures (a few validation patients made a noisy epoch selector)
    "val_fraction": 0.0}
SLICE_STACK_MAX_SIZE = 256  # slice stacks train at their native size up to this (other 2D data: the model's default)
SLICE_STACK_PATCH = 128  # ... on crops of this side when the slices are at least twice as large
SLICE_STACK_MIN_SLICES = 4  # "slice stacks": patients hold at least this many slices (median)


def with_defaults(cfg: TrainConfig, defaults: dict[str, Any]) -> TrainConfig:
    """`cfg` with each unset (None) setting named in `defaults` filled in, so a RUN records what it used."""
    return replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def recorded_val_fraction(config: "dict[str, Any] | TrainConfig") -> float:
    """The validation fraction a config (or a RUN's recorded one) means: None, or none recorded, is VAL_FRACTION."""
    value = config.get("val_fraction") if isinstance(config, dict) else config.val_fraction
    return VAL_FRACTION if value is None else float(value)


def check_stack_min_fraction(value: float, name: str = "stack_min_fraction") -> None:
    """The stack post-processing fraction must lie in [0, 1): 1 or more would drop the largest lesion too."""
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


def class_weights_for(cfg: TrainConfig, default: bool) -> bool:
    """Whether training weights cases so the classes count equally: as set, else `default`. Image classifiers
    default to off: by 3-fold CV on the MedMNIST train+val sets (benchmarks/accuracy.py folds) unweighted training
    gave the higher argmax accuracy on all four (BreastMNIST 0.865 -> 0.869, PneumoniaMNIST 0.968 -> 0.970,
    RetinaMNIST 0.495 -> 0.522, AdrenalMNIST3D 0.756 -> 0.824) and AUC within noise or better (0.887 -> 0.899,
    0.994 -> 0.995, 0.763 -> 0.770, 0.808 -> 0.804). Sequence classifiers (tens of videos) default to on."""
    return default if cfg.class_weights is None else bool(cfg.class_weights)


ENSEMBLE_MAX_SIDE = {2: 32, 3: 32}  # "MedMNIST-sized": every side at most this (28 px, 28^3)
ENSEMBLE_MIN_CASES = 200  # ... with at least this many training cases
ENSEMBLE_MEMBERS = 3
ENSEMBLE_MAX_MINUTES = 9.0  # training budget of a default ensemble without --max-minutes (the recipe's 10 minutes)


def ensemble_members(cfg: TrainConfig, input_shape: tuple[int, ...], n_train: int) -> int:
    """Members of an image classifier's ensemble: as set, else 3 for small inputs (every side <= 32, 2D or 3D)
    with >= 200 training cases, where one model trains in 1-2.5 of the 10 minutes the default recipe may take on
    2 cores; three side by side (3.4-5.3 min) beat their own members on all four MedMNIST sets in 3-fold CV (AUC
    +0.001 to +0.024, argmax accuracy +0.001 to +0.014; README, "Ensembles"); else 1, so large images and tiny
    sets cost what they did."""
    if cfg.members is not None:
        return int(cfg.members)
    spatial = input_shape[:-1]
    small = all(int(s) <= ENSEMBLE_MAX_SIDE.get(len(spatial), 0) for s in spatial)
    return ENSEMBLE_MEMBERS if small and n_train >= ENSEMBLE_MIN_CASES else 1


def auto_epochs(n_train: int, batch_size: int, target_steps: int = 600, lo: int = 10, hi: int = 80) -> int:
    """Epochs giving about `target_steps` optimiser steps, clamped: small sets get more epochs."""
    steps = max(1, -(-n_train // batch_size))
    return int(min(hi, max(lo, round(target_steps / steps))))
