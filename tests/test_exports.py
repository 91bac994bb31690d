"""Every meddx module's `__all__` names what it defines: `from meddx.x import *` must not raise (two modules listed
names that had moved to other modules when they were split)."""

from __future__ import annotations

import importlib
import pkgutil

import meddx


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(meddx.__path__, "meddx.")]


def test_every_name_in_all_exists() -> None:
    missing = {}
    for name in _modules():
        mod = importlib.import_module(name)
        absent = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
        if absent:
            missing[name] = absent
    assert not missing, f"__all__ names what the module lacks: {missing}"


def test_the_walk_sees_the_package() -> None:
    names = _modules()
    assert "meddx.transforms.twins" in names and "meddx.classic.slice_labelling" in names
