"""Model registry: name -> builder, with the input size and normalisation each model expects.

AUCMEDI-style (one entry serves 2D and 3D through a `dims` switch, MONAI-style). Importing this
module is cheap: Keras is only imported when a model is actually built.

    spec = model_spec("cnn")                 # ModelSpec: dims, default size, normalisation...
    model = build_model("cnn", (28, 28, 1), n_classes=2, task="binary")   # logits, flat graph
    layer_name = find_cam_layer(model)       # last spatial feature map (for Grad-CAM)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from meddx.errors import ConfigError

TASKS = ("binary", "multiclass", "multilabel")
NORMALISATIONS = ("minmax", "zscore", "imagenet")
KINDS = ("classification", "segmentation")
CAM_LAYER = "features"
OUTPUT_LAYER = "logits"
_ARCH_MODULES = ("cnn", "resnet", "densenet", "unet", "applications", "sequence")


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model expects: spatial dims, default size, normalisation, channels."""

    name: str
    builder: Callable[..., Any] = field(repr=False, compare=False)
    dims: tuple[int, ...]
    default_size: dict[int, int]
    normalisation: str
    description: str
    kind: str = "classification"
    channels: int | None = None  # None: any number; 3: 1 or 3 accepted (grey repeated inside)
    min_size: int | None = None  # smaller inputs are resized up inside the model
    cam_layer: str = CAM_LAYER

    def input_size(self, dims: int) -> tuple[int, ...]:
        """Default spatial shape for `dims` (2 -> (S, S), 3 -> (S, S, S))."""
        if dims not in self.dims:
            raise ConfigError(f"model '{self.name}' has no {dims}D variant (supports {_dims_text(self.dims)})")
        return (self.default_size[dims],) * dims

    @property
    def is_segmentation(self) -> bool:
        """True for dense (per-voxel) models such as the U-Net."""
        return self.kind == "segmentation"


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(
    name: str,
    dims: Sequence[int] = (2, 3),
    default_size: int | dict[int, int] = 64,
    normalisation: str = "minmax",
    description: str = "",
    kind: str = "classification",
    channels: int | None = None,
    min_size: int | None = None,
    cam_layer: str = CAM_LAYER,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering `builder(input_shape, n_outputs, dims, **kw) -> keras.Model`."""
    dims_t = tuple(sorted(set(int(d) for d in dims)))
    if not dims_t or any(d not in (2, 3) for d in dims_t):
        raise ValueError(f"register({name!r}): dims must be a subset of (2, 3), got {dims!r}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"register({name!r}): normalisation must be one of {NORMALISATIONS}")
    if kind not in KINDS:
        raise ValueError(f"register({name!r}): kind must be one of {KINDS}")
    sizes = dict(default_size) if isinstance(default_size, dict) else {d: int(default_size) for d in dims_t}
    if set(sizes) != set(dims_t):
        raise ValueError(f"register({name!r}): default_size must give a size for each of dims {dims_t}")

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(
            name=name, builder=builder, dims=dims_t, default_size=sizes, normalisation=normalisation,
            description=description, kind=kind, channels=channels, min_size=min_size, cam_layer=cam_layer,
        )
        return builder

    return decorator


def _ensure_loaded() -> None:
    """Import the architecture modules so their @register decorators run (they import Keras lazily)."""
    global _loaded
    if not _loaded:
        for mod in _ARCH_MODULES:
            importlib.import_module(f"meddx.models.{mod}")
        _loaded = True


def _dims_text(dims: Sequence[int]) -> str:
    return " and ".join(f"{d}D" for d in dims)


def list_models(kind: str | None = None, dims: int | None = None) -> list[str]:
    """Registered model names, optionally only one kind ('classification'/'segmentation') or dims."""
    _ensure_loaded()
    return sorted(
        n for n, s in _REGISTRY.items() if (kind is None or s.kind == kind) and (dims is None or dims in s.dims)
    )


def model_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under `name`; ConfigError listing the choices when unknown."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}") from None


def spatial_dims(input_shape: Sequence[int | None]) -> int:
    """2 for (H, W, C) and 3 for (D, H, W, C) input shapes (channels last, no batch axis)."""
    shape = tuple(input_shape)
    if len(shape) not in (3, 4):
        raise ConfigError(
            f"input shape {shape} is neither 2D (H, W, C) nor 3D (D, H, W, C); add a channel axis if missing"
        )
    if shape[-1] is None or int(shape[-1]) < 1:
        raise ConfigError(f"input shape {shape} needs a known number of channels in its last axis")
    if any(s is not None and int(s) < 1 for s in shape[:-1]):
        raise ConfigError(f"input shape {shape} has an empty spatial axis")
    return len(shape) - 1


def output_units(task: str, n_classes: int) -> int:
    """Logit units for a task: 1 for binary, n_classes for multiclass and multilabel."""
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
    n = int(n_classes)
    if task == "binary":
        if n not in (1, 2):
            raise ConfigError(f"task 'binary' needs 1 or 2 classes, got {n}; use task='multiclass' or 'multilabel'")
        return 1
    if task == "multiclass" and n < 2:
        raise ConfigError(f"task 'multiclass' needs at least 2 classes, got {n}")
    if n < 1:
        raise ConfigError(f"task '{task}' needs at least 1 class, got {n}")
    return n


def build_model(
    name: str,
    input_shape: Sequence[int | None],
    n_classes: int,
    task: str = "binary",
    **kw: Any,
) -> Any:
    """Build registered model `name` as a flat functional keras.Model whose output layer 'logits' has no activation.

    Spatial dims come from `input_shape` ((H, W, C) -> 2D, (D, H, W, C) -> 3D). Extra keyword
    arguments go to the architecture builder (e.g. `dropout`, `width`, `weights`).
    """
    spec = model_spec(name)
    shape = tuple(None if s is None else int(s) for s in input_shape)
    dims = spatial_dims(shape)
    if dims not in spec.dims:
        what = "2D images" if dims == 2 else "3D volumes"
        raise ConfigError(
            f"model '{name}' is {_dims_text(spec.dims)}-only; the data are {what} of shape {shape}"
        )
    if spec.channels == 3 and shape[-1] not in (1, 3):
        raise ConfigError(f"model '{name}' takes 1 (grey) or 3 (RGB) channels; the data have {shape[-1]}")
    units = output_units(task, n_classes)
    try:
        model = spec.builder(shape, units, dims=dims, **kw)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"model '{name}': {exc}") from None
        raise
    return model


def find_cam_layer(model: Any) -> str:
    """Name of the layer Grad-CAM should use: 'features' if present, else the last layer with a 4D/5D output."""
    import keras

    candidates = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            out = layer.output
        except (AttributeError, ValueError):
            continue
        if isinstance(out, (list, tuple)) or len(out.shape) not in (4, 5):
            continue
        candidates.append(layer.name)
    if CAM_LAYER in candidates:
        return CAM_LAYER
    non_output = [c for c in candidates if c != OUTPUT_LAYER]
    if non_output:
        return non_output[-1]
    if candidates:
        return candidates[-1]
    raise ConfigError(f"model '{model.name}' has no layer with a spatial (4D/5D) output for Grad-CAM")


def load_model(path: Any) -> Any:
    """Load a saved `.keras` model safely (safe_mode=True) with meddx's custom layers registered."""
    import keras

    from meddx.models import custom_layers  # noqa: F401  (registers meddx>... layers)

    _ensure_loaded()  # sequence models define their own serialisable layers

    return keras.models.load_model(path, safe_mode=True)
