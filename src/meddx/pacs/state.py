"""The watcher's persistent state: the last change it finished, studies done and failed (no identifiers).

`STATE/state.json` is rewritten atomically after every change, so a killed watcher resumes after the last
change it finished. Studies are keyed by a hash of their StudyInstanceUID plus the model name and version,
so the file holds no DICOM identifiers. A lock file keeps two watchers off one state folder.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from meddx.errors import ConfigError
from meddx.utils import atomic_write_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOCK_FILE = "lock"


def study_key(study_uid: str) -> str:
    """A short, stable, non-identifying key for a study (salted SHA-256 of its UID)."""
    return hashlib.sha256(f"meddx-pacs:{study_uid}".encode()).hexdigest()[:16]


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/meddx/pacs-watch (default ~/.local/state/meddx/pacs-watch)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meddx" / "pacs-watch"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class WatchState:
    """Position in Orthanc's change feed and the per-(study, model) outcomes, persisted in `folder`."""

    def __init__(self, folder: str | Path | None = None, lock: bool = True) -> None:
        self.folder = Path(folder) if folder else default_state_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        if lock:
            self._lock()
        self.path = self.folder / STATE_FILE
        self.data: dict[str, Any] = {"version": 1, "last_seq": 0, "done": {}, "failed": {}}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"unreadable watcher state: {exc}", self.path) from None
            if not isinstance(loaded, dict) or not isinstance(loaded.get("last_seq"), int):
                raise ConfigError("not a meddx watcher state (no last_seq)", self.path)
            self.data.update(loaded)

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError("another watcher is using this state folder", self.folder) from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (the state itself is always saved already)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def last_seq(self) -> int:
        return int(self.data["last_seq"])

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def advance(self, seq: int) -> None:
        """Record that every change up to `seq` is finished (never moves backwards)."""
        if int(seq) > self.last_seq:
            self.data["last_seq"] = int(seq)
            self.save()

    def is_done(self, key: str) -> bool:
        return key in self.data["done"]

    def mark_done(self, key: str, **info: Any) -> None:
        self.data["done"][key] = {"time": _now(), **info}
        self.data["failed"].pop(key, None)
        self.save()

    def mark_failed(self, key: str, error: str, attempts: int) -> None:
        self.data["failed"][key] = {"time": _now(), "error": error[:300], "attempts": int(attempts)}
        self.save()
