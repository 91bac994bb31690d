"""Model registry: name -> builder, with the dims, default input size and kind each model has.

AUCMEDI-style (one entry serves 2D and 3D through a `dims` switch, MONAI-style). Importing this
module, `list_models()` and `model_spec()` are cheap: the built-in models are declared here with
their builders as lazy "module:function" references, so Keras/TensorFlow are imported only when a
model is actually built (`build_model`) or loaded (`load_model`).

Default preprocessing is not a property of the model: it comes from the data (see
`meddx.transforms` and the training config).

    spec = model_spec("cnn")                 # ModelSpec: dims, default size, kind, channels...
    model = build_model("cnn", (28, 28, 1), n_classes=2, task="binary")   # logits, flat graph
    layer_name = find_cam_layer(model)       # meddx.models.layers: the Grad-CAM feature map
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from meddx.errors import ConfigError

TASKS = ("binary", "multiclass", "multilabel")
KINDS = ("classification", "segmentation")
CAM_LAYER = "features"
OUTPUT_LAYER = "logits"
# Modules that define Keras layers registered for safe loading of saved `.keras` models.
_SERIALISABLE_MODULES = ("meddx.models.custom_layers", "meddx.models.sequence")

Builder = Callable[..., Any]


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model expects: spatial dims, default size, kind, channels.

    `builder` is the function `builder(input_shape, units, dims, **kw) -> keras.Model`, or a lazy
    "package.module:function" reference imported on first use (`get_builder()`).
    """

    name: str
    builder: Builder | str = field(repr=False, compare=False)
    dims: tuple[int, ...]
    default_size: dict[int, int]
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

    def get_builder(self) -> Builder:
        """The builder function, importing its module now when it is a lazy "module:function" reference."""
        if not isinstance(self.builder, str):
            return self.builder
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, ModelSpec] = {}


def _checked(name: str, builder: Builder | str, dims: Sequence[int], default_size: int | dict[int, int],
             kind: str) -> tuple[tuple[int, ...], dict[int, int]]:
    """(dims, default sizes per dims) after checking a registration; ValueError (a programming error) if wrong."""
    dims_t = tuple(sorted(set(int(d) for d in dims)))
    if not dims_t or any(d not in (2, 3) for d in dims_t):
        raise ValueError(f"register({name!r}): dims must be a subset of (2, 3), got {dims!r}")
    if kind not in KINDS:
        raise ValueError(f"register({name!r}): kind must be one of {KINDS}")
    sizes = dict(default_size) if isinstance(default_size, dict) else {d: int(default_size) for d in dims_t}
    if set(sizes) != set(dims_t):
        raise ValueError(f"register({name!r}): default_size must give a size for each of dims {dims_t}")
    if isinstance(builder, str) and (builder.count(":") != 1 or not all(builder.split(":"))):
        raise ValueError(f"register({name!r}): a lazy builder must read 'package.module:function', got {builder!r}")
    return dims_t, sizes


def _same_builder(old: Builder | str, new: Builder | str) -> bool:
    """True when `old` and `new` name the same function (one may be its lazy "module:function" reference)."""
    if old is new:
        return True

    def ref(b: Builder | str) -> str:
        return b if isinstance(b, str) else f"{getattr(b, '__module__', '')}:{getattr(b, '__qualname__', '')}"

    return ref(old) == ref(new)


def register(
    name: str,
    dims: Sequence[int] = (2, 3),
    default_size: int | dict[int, int] = 64,
    description: str = "",
    kind: str = "classification",
    channels: int | None = None,
    min_size: int | None = None,
    cam_layer: str = CAM_LAYER,
    builder: str | None = None,
) -> Callable[[Builder], Builder]:
    """Register a model: as a decorator on `builder(input_shape, n_outputs, dims, **kw) -> keras.Model`,
    or with `builder="package.module:function"` (registered at once, imported on first build).

    Returns the decorator (a no-op pass-through once a lazy `builder` reference is registered).
    """
    dims_t, sizes = _checked(name, builder or "_:_", dims, default_size, kind)

    def add(b: Builder | str) -> None:
        if name in _REGISTRY and not _same_builder(_REGISTRY[name].builder, b):
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name=name, builder=b, dims=dims_t, default_size=sizes, description=description,
                                    kind=kind, channels=channels, min_size=min_size, cam_layer=cam_layer)

    if builder is not None:
        add(builder)
        return lambda fn: fn

    def decorator(fn: Builder) -> Builder:
        add(fn)
        return fn

    return decorator


# -- the built-in models (declared here so listing them imports no Keras) -------------------------

_SEQ_DESC = "sequence model over frames (T, H, W, C): per-frame CNN shared over time + "
_APP_DESC = ("keras.applications.{} (ImageNet weights optional); inputs in [0, 1], grey repeated to RGB, "
             "preprocessing inside")
_BUILTINS: tuple[dict[str, Any], ...] = (
    dict(name="cnn", builder="meddx.models.cnn:build_cnn", dims=(2, 3), default_size={2: 64, 3: 28},
         description="6-conv batch-norm CNN (32-32-pool-64-64-pool-128-128 in 2D, 16-32-64 in 3D; first conv "
                     "strided for inputs >= 48 px); fast CPU default"),
    dict(name="resnet18", builder="meddx.models.resnet:build_resnet18", dims=(2, 3), default_size={2: 64, 3: 32},
         description="ResNet-18 (basic blocks 2-2-2-2); CIFAR stem for inputs <= 64 px"),
    dict(name="resnet50", builder="meddx.models.resnet:build_resnet50", dims=(2, 3), default_size={2: 64, 3: 32},
         description="ResNet-50 (bottleneck blocks 3-4-6-3); CIFAR stem for inputs <= 64 px"),
    dict(name="densenet121", builder="meddx.models.densenet:build_densenet121", dims=(2, 3),
         default_size={2: 64, 3: 32},
         description="DenseNet-121 (growth 32, blocks 6-12-24-16); compact stem for inputs <= 64 px"),
    dict(name="unet", builder="meddx.models.unet:build_unet", dims=(2, 3), default_size={2: 128, 3: 64},
         kind="segmentation",
         description="U-Net (depth 4, 32 base filters, optional residual blocks); per-pixel logits"),
    *(dict(name=name, builder=f"meddx.models.applications:build_{name}", dims=(2,), default_size=224, channels=3,
           min_size=32, description=_APP_DESC.format(app))  # min_size: applications.MIN_SIZE
      for name, app in (("app_resnet50", "ResNet50"), ("app_densenet121", "DenseNet121"),
                        ("app_efficientnetb0", "EfficientNetB0"), ("app_mobilenetv2", "MobileNetV2"))),
    dict(name="app_convnext_tiny", builder="meddx.models.applications:build_convnext_tiny", dims=(2,),
         default_size=224, channels=3, min_size=32,
         description="ConvNeXt-Tiny (Keras Applications layout, assembled flat; ImageNet weights optional)"),
    dict(name="lstm", builder="meddx.models.sequence:build_lstm", dims=(3,), default_size=64,
         description=_SEQ_DESC + "bidirectional LSTM + attention pooling"),
    dict(name="gru", builder="meddx.models.sequence:build_gru", dims=(3,), default_size=64,
         description=_SEQ_DESC + "bidirectional GRU + attention pooling"),
    dict(name="tcn", builder="meddx.models.sequence:build_tcn", dims=(3,), default_size=64,
         description=_SEQ_DESC + "TCN (dilated causal Conv1D residual blocks) + attention pooling"),
    dict(name="transformer", builder="meddx.models.sequence:build_transformer", dims=(3,), default_size=64,
         description=_SEQ_DESC + "Transformer encoder (sinusoidal positions, masked MHA) + attention pooling"),
    dict(name="cnn25d", builder="meddx.models.sequence:build_cnn25d", dims=(3,), default_size=64,
         description="2.5D baseline: the T frames (T, H, W, C) stacked as channels of one 2D CNN (fixed T)"),
)
for _entry in _BUILTINS:
    register(**_entry)
del _entry


def _dims_text(dims: Sequence[int]) -> str:
    return " and ".join(f"{d}D" for d in dims)


def list_models(kind: str | None = None, dims: int | None = None) -> list[str]:
    """Registered model names, optionally only one kind ('classification'/'segmentation') or dims."""
    return sorted(
        n for n, s in _REGISTRY.items() if (kind is None or s.kind == kind) and (dims is None or dims in s.dims)
    )


def model_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under `name`; ConfigError listing the choices when unknown."""
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
    members: int = 1,
    **kw: Any,
) -> Any:
    """Build registered model `name` as a flat functional keras.Model whose output layer 'logits' has no activation.

    Spatial dims come from `input_shape` ((H, W, C) -> 2D, (D, H, W, C) -> 3D). Extra keyword
    arguments go to the architecture builder (e.g. `dropout`, `width`, `weights`). `members` > 1: an ensemble of
    that many copies side by side (`meddx.models.ensemble`), a classifier's logits as one model's.
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
    if members > 1 and spec.is_segmentation:
        raise ConfigError(f"model '{name}' is a segmentation network; ensembles are built for classifiers")

    def build() -> Any:
        try:
            return spec.get_builder()(shape, units, dims=dims, **kw)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc):
                raise ConfigError(f"model '{name}': {exc}") from None
            raise

    if members <= 1:
        return build()
    from meddx.models.ensemble import build_ensemble

    return build_ensemble(build, members, task)


def load_model(path: Any) -> Any:
    """Load a saved `.keras` model safely (safe_mode=True) with meddx's custom layers registered."""
    import keras

    for module in _SERIALISABLE_MODULES:  # their @register_keras_serializable layers must be known
        importlib.import_module(module)
    return keras.models.load_model(path, safe_mode=True)
