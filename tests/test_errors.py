"""errors.naming: an error raised deep inside (e.g. on an array) still names the input file."""

from __future__ import annotations

import pytest

from meddx.errors import ConfigError, InputError, MeddxError, naming


def test_naming_adds_the_file_to_an_error_that_names_none() -> None:
    with pytest.raises(InputError) as info:
        with naming("/data/scan.dcm"):
            raise InputError("select_channels [1] but the image has 1 channel(s)")
    assert str(info.value) == "/data/scan.dcm: select_channels [1] but the image has 1 channel(s)"
    assert info.value.path == "/data/scan.dcm" and info.value.exit_code == 2


def test_naming_keeps_an_error_that_already_names_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^/other.nii: bad$"):
        with naming("/data/scan.dcm"):
            raise ConfigError("bad", "/other.nii")


def test_naming_leaves_other_exceptions_alone() -> None:
    with pytest.raises(ValueError):
        with naming("/data/scan.dcm"):
            raise ValueError("a bug, not bad input")
    assert issubclass(InputError, MeddxError)


def test_meddx_errors_are_value_errors_with_exit_code() -> None:
    """Callers handling ValueError keep working; the CLI still reads exit_code and path."""
    from meddx.errors import DataError, NetworkError

    for cls in (MeddxError, InputError, DataError, ConfigError, NetworkError):
        assert issubclass(cls, ValueError)
    err = DataError("empty split", "/data/x.npz")
    assert isinstance(err, ValueError) and err.exit_code == 2 and err.path == "/data/x.npz"
    assert str(err) == "/data/x.npz: empty split"
