"""Registry behaviour: names, specs, dims inference, task validation, clear one-line errors."""

from __future__ import annotations

import pytest

from meddx.errors import ConfigError, NetworkError
from meddx.models import build_model, list_models, model_spec
from meddx.models.registry import output_units, spatial_dims

EXPECTED = {
    "cnn": (2, 3), "resnet18": (2, 3), "resnet50": (2, 3), "densenet121": (2, 3), "unet": (2, 3),
    "app_resnet50": (2,), "app_densenet121": (2,), "app_efficientnetb0": (2,), "app_mobilenetv2": (2,),
    "app_convnext_tiny": (2,),
}


def test_list_models_has_every_architecture() -> None:
    assert set(EXPECTED) <= set(list_models())  # sequence heads (models/sequence.py) register too
    assert "unet" in list_models(kind="segmentation")
    assert "app_resnet50" not in list_models(dims=3)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_spec_fields(name: str) -> None:
    spec = model_spec(name)
    assert spec.dims == EXPECTED[name]
    assert set(spec.default_size) == set(spec.dims)
    assert not hasattr(spec, "normalisation")  # preprocessing comes from the data, not the model
    assert spec.description
    assert spec.kind == ("segmentation" if name == "unet" else "classification")
    assert spec.input_size(spec.dims[0]) == (spec.default_size[spec.dims[0]],) * spec.dims[0]
    assert spec.cam_layer == "features"


def test_specific_defaults() -> None:
    assert model_spec("cnn").default_size == {2: 64, 3: 28}
    assert model_spec("app_mobilenetv2").channels == 3
    assert model_spec("app_mobilenetv2").min_size == 32
    assert model_spec("unet").is_segmentation


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ConfigError, match="unknown model 'vgg99'.*cnn"):
        model_spec("vgg99")


def test_dims_inference() -> None:
    assert spatial_dims((28, 28, 1)) == 2
    assert spatial_dims((28, 28, 28, 1)) == 3
    assert spatial_dims((None, None, 3)) == 2
    for bad in [(28, 28), (1, 28, 28, 28, 1), (28, 28, None)]:
        with pytest.raises(ConfigError):
            spatial_dims(bad)


def test_2d_only_model_given_volume_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("app_resnet50", (28, 28, 28, 1), 2)
    msg = str(info.value)
    assert msg == "model 'app_resnet50' is 2D-only; the data are 3D volumes of shape (28, 28, 28, 1)"
    assert "\n" not in msg


def test_3d_only_model_given_images_is_one_clear_line() -> None:
    from meddx.models.registry import _REGISTRY, register

    @register("_test_3d_only", dims=(3,), default_size=16, description="test")
    def _builder(input_shape, units, dims):  # pragma: no cover - never reached
        raise AssertionError

    try:
        with pytest.raises(ConfigError, match=r"^model '_test_3d_only' is 3D-only; the data are 2D images of shape "
                                              r"\(28, 28, 1\)$"):
            build_model("_test_3d_only", (28, 28, 1), 2)
    finally:
        _REGISTRY.pop("_test_3d_only", None)


def test_task_units_and_validation() -> None:
    assert output_units("binary", 2) == 1
    assert output_units("binary", 1) == 1
    assert output_units("multiclass", 6) == 6
    assert output_units("multilabel", 14) == 14
    with pytest.raises(ConfigError, match="binary"):
        output_units("binary", 3)
    with pytest.raises(ConfigError, match="multiclass"):
        output_units("multiclass", 1)
    with pytest.raises(ConfigError, match="unknown task"):
        build_model("cnn", (28, 28, 1), 2, task="regression")


def test_unknown_keyword_is_config_error() -> None:
    with pytest.raises(ConfigError, match="cnn.*unexpected keyword"):
        build_model("cnn", (28, 28, 1), 2, not_an_option=3)


def test_app_rejects_other_channel_counts() -> None:
    with pytest.raises(ConfigError, match="1 \\(grey\\) or 3"):
        build_model("app_mobilenetv2", (32, 32, 4), 2)


def test_missing_local_weights_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_model("app_mobilenetv2", (32, 32, 3), 2, weights=str(tmp_path / "nope.h5"))


def _offline(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
                    "[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("name", ["app_mobilenetv2", "app_convnext_tiny"])
def test_imagenet_download_failure_is_network_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras.src.utils.file_utils as file_utils
    import keras.utils

    monkeypatch.setattr(file_utils, "get_file", _offline)
    monkeypatch.setattr(keras.utils, "get_file", _offline)
    with pytest.raises(NetworkError) as info:
        build_model(name, (32, 32, 3), 2, weights="imagenet")
    msg = str(info.value)
    assert "could not download ImageNet weights" in msg and name in msg and "\n" not in msg


def test_registry_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, meddx.models as m; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_listing_and_specs_import_no_keras() -> None:
    """list_models()/model_spec() read declared specs: no architecture module (hence no Keras/TF) is imported.

    A fresh interpreter, so that other tests' imports do not hide an eager import."""
    import subprocess
    import sys

    code = ("import meddx.models.registry as r; r.list_models(); r.model_spec('cnn'); r.model_spec('lstm'); "
            "from meddx.models import list_models, model_spec; list_models(kind='segmentation'); "
            "import sys; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))[:5]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_builtin_builders_resolve() -> None:
    """Every lazy "module:function" reference of the built-in specs names a callable builder."""
    from meddx.models.applications import MIN_SIZE
    from meddx.models.registry import _BUILTINS

    assert {e["name"] for e in _BUILTINS} == set(EXPECTED) | {"lstm", "gru", "tcn", "transformer", "cnn25d"}
    for entry in _BUILTINS:
        spec = model_spec(entry["name"])
        assert isinstance(spec.builder, str), spec.name
        assert callable(spec.get_builder()), spec.name
        assert spec.min_size in (None, MIN_SIZE)


def test_register_lazy_reference_and_checks() -> None:
    from meddx.models.registry import _REGISTRY, register

    try:
        register("_test_lazy", dims=(2,), default_size=8, description="test",
                 builder="meddx.models.cnn:build_cnn")
        spec = model_spec("_test_lazy")
        assert spec.builder == "meddx.models.cnn:build_cnn" and "_test_lazy" in list_models(dims=2)
        assert build_model("_test_lazy", (8, 8, 1), 2).output.shape[-1] == 1
        with pytest.raises(ValueError, match="already registered"):
            register("_test_lazy", dims=(2,), builder="meddx.models.cnn:other")
    finally:
        _REGISTRY.pop("_test_lazy", None)
    with pytest.raises(ValueError, match="module:function"):
        register("_test_bad", builder="meddx.models.cnn.build_cnn")
    with pytest.raises(ValueError, match="dims"):
        register("_test_bad", dims=(1,))
    assert "_test_bad" not in _REGISTRY
