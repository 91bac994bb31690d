"""Deep ensembles in one flat Keras graph: K copies of a registry classifier side by side on the same input.

Each member keeps its own weights (fresh initialisation, own batch-norm and dropout) and is trained on its own
cross-entropy (`member_loss` on `training_view`), so the members are an ensemble, not one wider network. The saved
model's 'logits' layer (`MemberMean`) turns the members' logits into the logits of their mean probability, and its
'features' layer is the members' feature maps side by side, so prediction, Grad-CAM (the sum of the members' maps),
the OOD fingerprint and export read an ensemble as they read one model.

    model = build_model("cnn", (28, 28, 1), 2, task="binary", members=3)   # the inference graph
    train_model = training_view(model)          # outputs the members' logits (N, K*U)
    train_model.compile(loss=member_loss(3, "binary"), ...)
"""

from __future__ import annotations

from typing import Any, Callable

from meddx.errors import ConfigError
from meddx.models.registry import CAM_LAYER, OUTPUT_LAYER

__all__ = ["build_ensemble", "training_view", "member_loss", "member_count"]


def _renamed(prefix: str) -> Callable[[Any], Any]:
    """clone_model's clone_function: the same layer, fresh weights, its name prefixed (names stay unique)."""

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        config["name"] = prefix + layer.name
        return layer.__class__.from_config(config)

    return clone


def _head(model: Any) -> list[Any]:
    """The layers from 'features' to 'logits' (pooling, dropout, Dense), a chain each member repeats on its slice."""
    names = [layer.name for layer in model.layers]
    if CAM_LAYER not in names or names[-1] != OUTPUT_LAYER:
        raise ConfigError(f"model '{model.name}' has no '{CAM_LAYER}' -> '{OUTPUT_LAYER}' head; it cannot be an ensemble")
    head = model.layers[names.index(CAM_LAYER) + 1:]
    previous = model.get_layer(CAM_LAYER)
    for layer in head:
        if layer.input is not previous.output:
            raise ConfigError(f"model '{model.name}': the layers after '{CAM_LAYER}' are not a chain; "
                              "it cannot be an ensemble")
        previous = layer
    return head


def build_ensemble(build_member: Callable[[], Any], members: int, task: str) -> Any:
    """The inference graph of `members` copies of `build_member()` (a meddx classifier with 'features' and 'logits'
    layers): 'features' joins the members' maps on the channel axis, each member's head reads its own channels,
    and 'logits' is `MemberMean` of the members' logits."""
    import keras

    from meddx.models.custom_layers import ChannelSlice, MemberMean

    first = build_member()
    head = _head(first)
    inputs = keras.Input(shape=first.inputs[0].shape[1:], name="image")
    maps = []
    for k in range(members):
        base = first if k == 0 else build_member()
        trunk = keras.Model(base.inputs[0], base.get_layer(CAM_LAYER).output)
        clone = keras.models.clone_model(trunk, input_tensors=inputs, clone_function=_renamed(f"m{k}_"))
        maps.append(clone.outputs[0])
    features = keras.layers.Identity(name=CAM_LAYER)(keras.layers.Concatenate(axis=-1, name="member_features")(maps))
    logits = []
    for k in range(members):
        x = ChannelSlice(k, members, name=f"m{k}_slice")(features)
        for layer in head:
            x = _renamed(f"m{k}_")(layer)(x)
        logits.append(x)
    side_by_side = keras.layers.Concatenate(axis=-1, name="member_logits")(logits)
    return keras.Model(inputs, MemberMean(members, task, name=OUTPUT_LAYER)(side_by_side),
                       name=f"{first.name}_x{members}")


def member_count(model: Any) -> int:
    """How many members `model` averages (1 for a single classifier)."""
    try:
        layer = model.get_layer(OUTPUT_LAYER)
    except (ValueError, AttributeError):
        return 1
    return int(getattr(layer, "members", 1))


def training_view(model: Any) -> Any:
    """The model whose output is every member's logits side by side (the input of 'logits'), sharing all weights
    with `model`; `model` itself when it is not an ensemble."""
    import keras

    if member_count(model) == 1:
        return model
    return keras.Model(model.inputs, model.get_layer(OUTPUT_LAYER).input, name=f"{model.name}_members")


def member_loss(members: int, task: str, smoothing: float = 0.0) -> Callable[[Any, Any], Any]:
    """Per-case loss of an ensemble's training view: the members' cross-entropies (from logits) averaged, so each
    member learns on its own; (N,) values, so sample weights apply as for one model. `smoothing` > 0 is label
    smoothing: the target puts 1 - `smoothing` on the true class and spreads `smoothing` evenly over all classes
    (binary: over 0 and 1)."""

    def loss(y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        units = y_pred.shape[-1] // members
        z = ops.reshape(ops.cast(y_pred, "float32"), (-1, members, units))
        if task == "multiclass":
            y = ops.reshape(ops.cast(y_true, "int32"), (-1, 1))
            y = ops.repeat(y, members, axis=1)
            per = ops.sparse_categorical_crossentropy(y, z, from_logits=True)  # (N, K)
            if smoothing:
                uniform = -ops.mean(ops.log_softmax(z, axis=-1), axis=-1)  # cross-entropy to the uniform target
                per = (1.0 - smoothing) * per + smoothing * uniform
            return ops.mean(per, axis=1)
        y = ops.reshape(ops.cast(y_true, "float32"), (-1, 1, units))
        y = ops.repeat(y, members, axis=1)
        if smoothing:
            y = y * (1.0 - smoothing) + 0.5 * smoothing
        per = ops.binary_crossentropy(y, z, from_logits=True)  # (N, K, U)
        return ops.mean(ops.reshape(per, (-1, members * units)), axis=1)

    loss.__name__ = f"member_{'sparse_categorical' if task == 'multiclass' else 'binary'}_crossentropy"
    return loss
