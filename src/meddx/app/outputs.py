"""Output folders written as a whole: a command writes into a hidden sibling folder, and only when every file is
done is that folder renamed to `--out`; a failure (bad input, full or read-only disk, interruption) leaves no
folder that looks complete.

Policy for an `--out` that already exists: an empty folder is used; a folder written earlier by the same command
for the same RUN and inputs is replaced as a whole (re-running is safe); anything else (another study's or run's
outputs, unrelated files) is refused, so outputs of two patients never mix in one folder. The marker file
`.meddx-output.json` records a hash of the command, RUN and inputs (no paths, nothing identifying).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from meddx.errors import MeddxError

MARKER = ".meddx-output.json"
_TEXT_SUFFIXES = (".csv", ".json", ".html", ".txt", ".md", ".tsv")
_MAX_RELOCATE_BYTES = 64 * 2**20
_LOGGER = logging.getLogger("meddx")
F = TypeVar("F", bound=Callable[..., Any])


class OutputError(MeddxError):
    """The output folder cannot be used or written (a file, someone else's outputs, disk full, read-only)."""


_OS_HINTS = {
    errno.ENOSPC: "the disk is full (free space or choose another --out)",
    errno.EDQUOT: "the disk quota is exceeded (free space or choose another --out)",
    errno.EROFS: "the file system is read-only (choose another --out)",
    errno.EACCES: "permission denied (choose a folder you can write to)",
    errno.EPERM: "permission denied (choose a folder you can write to)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EFBIG: "a file grew too large for this file system",
    errno.ENAMETOOLONG: "the path is too long",
}


def describe_os_error(exc: OSError) -> str:
    """One plain sentence for an operating-system error (disk full, read-only, permission...)."""
    hint = _OS_HINTS.get(exc.errno or -1)
    return hint or (exc.strerror or str(exc) or type(exc).__name__)


def fingerprint(command: str, *parts: Any) -> str:
    """Hash of a command and what it was run on (RUN, inputs): recorded in the marker, compared on re-runs."""
    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, (str, Path)):
            try:
                return str(Path(v).expanduser().resolve())
            except (OSError, RuntimeError):
                return str(v)
        return v if isinstance(v, (int, float, bool, type(None))) else str(v)

    text = json.dumps([command, [norm(p) for p in parts]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_out(out: str | Path, key: str) -> Path:
    """`out` as a Path, refused (OutputError naming it) when it is a file, its parent is a file, or it is a
    non-empty folder not written by this same command for the same RUN and inputs (`key`)."""
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            what = "--out is a file, not a folder" if parent == out else f"{parent} is a file, so --out cannot be " \
                                                                          "created under it"
            raise OutputError(what, out)
        if parent.exists():
            break
    if out.is_dir():
        entries = [e for e in out.iterdir() if e.name != MARKER]
        if entries and _marker_key(out) != key:
            shown = ", ".join(sorted(e.name for e in entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise OutputError(f"folder is not empty and holds other outputs ({shown}); meddx never mixes studies "
                              "or runs in one folder: choose a new --out or remove this one", out)
    return out


def _marker_key(out: Path) -> str | None:
    try:
        return json.loads((out / MARKER).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _relocate_text(stage: Path, forms: list[tuple[str, str]]) -> None:
    """Rewrite references to the staging folder inside the written text files (CSV, JSON, HTML) to the final one."""
    for f in stage.rglob("*"):
        if not f.is_file() or f.suffix.lower() not in _TEXT_SUFFIXES or f.stat().st_size > _MAX_RELOCATE_BYTES:
            continue
        try:
            text = f.read_bytes().decode("utf-8")  # bytes: CSV's \r\n line ends are kept as written
        except (UnicodeDecodeError, OSError):
            continue
        new = text
        for old, final in forms:
            new = new.replace(old, final)
        if new != text:
            f.write_bytes(new.encode("utf-8"))


def _relocate_value(value: Any, forms: list[tuple[str, str]]) -> Any:
    """The command's return value with staging paths mapped to the final folder."""
    if isinstance(value, Path):
        return Path(_relocate_value(str(value), forms))
    if isinstance(value, str):
        for old, final in forms:
            if value.startswith(old):
                return final + value[len(old):]
        return value
    if isinstance(value, dict):
        return {k: _relocate_value(v, forms) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_relocate_value(v, forms) for v in value)
    return value


def _commit(stage: Path, out: Path) -> None:
    """Rename the finished staging folder to `out` (replacing an empty folder or this command's previous outputs
    as a whole)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(stage, out)
    except OSError:
        if old is not None:
            os.rename(old, out)  # put the previous outputs back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staged_call(func: Callable[..., Any], out: str | Path, key: str, call: Callable[[Path, Callable[[str], None]],
                Any], log: Callable[[str], None] | None = None) -> Any:
    """Run `call(stage_folder, log)` and rename the stage folder to `out` when it returns; on any failure remove
    the stage folder (nothing half-written is left) and turn file-system errors into one OutputError line."""
    out = check_out(out, key)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # as a plain mkdir would (mkdtemp makes it private)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {describe_os_error(exc)}", out) from None
    if not out.is_absolute():
        stage = Path(os.path.relpath(stage)) if Path(stage).is_absolute() else stage
    forms = [(str(stage), str(out))]
    if str(stage.resolve()) != str(stage):
        forms.append((str(stage.resolve()), str(out.resolve())))
    inner = log if log is not None else _LOGGER.info

    def relog(msg: str) -> None:
        for old, final in forms:
            msg = msg.replace(old, final)
        inner(msg)

    try:
        result = call(stage, relog)
        _relocate_text(stage, forms)
        (stage / MARKER).write_text(json.dumps({"key": key, "command": func.__name__}) + "\n", encoding="utf-8")
        _commit(stage, out)
    except OSError as exc:
        if exc.errno in _OS_HINTS or exc.errno in (errno.EIO, errno.EEXIST, errno.EISDIR):
            raise OutputError(f"cannot write outputs: {describe_os_error(exc)}; nothing was written", out) from None
        raise
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return _relocate_value(result, forms)


def writes_output_folder(command: str, *identity: str) -> Callable[[F], F]:
    """Decorator for an app function taking `out` (and optionally `log`): its outputs are staged and renamed into
    place as a whole (`staged_call`); `identity` names the parameters that say what was run on (RUN, inputs...)."""
    def wrap(func: F) -> F:
        sig = inspect.signature(func)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            key = fingerprint(command, *(bound.arguments.get(k) for k in identity))

            def call(stage: Path, log: Callable[[str], None]) -> Any:
                bound.arguments["out"] = stage
                if "log" in bound.arguments:
                    bound.arguments["log"] = log
                return func(*bound.args, **bound.kwargs)

            return staged_call(func, bound.arguments["out"], key, call, bound.arguments.get("log"))

        return run  # type: ignore[return-value]
    return wrap
