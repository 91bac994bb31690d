"""`meddx pacs orthanc`: write a loopback-only, authenticated Orthanc configuration and run the Debian binary."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from meddx.errors import InputError, MeddxError

log = logging.getLogger(__name__)

ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
APT_LINE = "apt-get install orthanc orthanc-dicomweb"
DEFAULT_USER = "meddx"
KEPT_KEYS = ("DicomModalities",)  # what an administrator may edit in DIR/orthanc.json; kept across restarts


def read_credentials(path: str | Path) -> tuple[str, str]:
    """(user, password) from a file holding one line `user:password`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(f"cannot read credentials: {exc.strerror or exc}", p) from exc
    user, sep, password = text.partition(":")
    if not sep or not user or not password or "\n" in text:
        raise InputError("credentials file must hold one line 'user:password'", p)
    return user, password


def write_credentials(path: str | Path, user: str = DEFAULT_USER, password: str | None = None) -> tuple[str, str]:
    """Write `user:password` (a random password unless given) to `path`, readable by its owner only (0600)."""
    password = password or secrets.token_urlsafe(18)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _write_private(p, f"{user}:{password}\n")
    return user, password


def orthanc_config(storage: str | Path, http_port: int, dicom_port: int, user: str, password: str,
                   plugin: str = DICOMWEB_PLUGIN, stable_age: int = 5) -> dict[str, Any]:
    """The Orthanc configuration: data in `storage`, DICOMweb on, HTTP for this machine only with basic auth."""
    storage = Path(storage).resolve()
    return {
        "Name": "meddx-orthanc",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": int(http_port),
        "DicomPort": int(dicom_port),
        "DicomAet": "MEDDX",
        # HTTP answers loopback clients only (Orthanc 1.10 has no bind address; it refuses remote peers).
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        # DICOM: echo for anyone, C-STORE/C-FIND/C-MOVE only from modalities declared in "DicomModalities".
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {},
        "OrthancPeers": {},
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "DeidentifyLogs": True,
        "StableAge": int(stable_age),
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": "127.0.0.1",
                     "Ssl": False, "StudiesMetadata": "MainDicomTags", "SeriesMetadata": "Full"},
    }


def write_config(storage: str | Path, http_port: int = 8042, dicom_port: int = 4242,
                 credentials: str | Path | None = None, stable_age: int = 5) -> Path:
    """Write DIR/orthanc.json (and DIR/credentials, mode 600, unless `credentials` names a file); its path."""
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "db").mkdir(exist_ok=True)
    if credentials:
        user, password = read_credentials(credentials)
    else:
        cred = storage / "credentials"
        user, password = read_credentials(cred) if cred.exists() else write_credentials(cred)
    for port in (http_port, dicom_port):
        if not 0 < int(port) < 65536:
            raise InputError(f"port {port} is not in 1-65535")
    cfg = orthanc_config(storage, http_port, dicom_port, user, password, stable_age=stable_age)
    path = storage / "orthanc.json"
    if path.exists():  # keep the modalities an administrator declared (the rest is meddx's, rewritten)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"existing configuration is not valid JSON: {exc}", path) from None
        for key in KEPT_KEYS:
            if isinstance(old.get(key), dict):
                cfg[key] = old[key]
    _write_private(path, json.dumps(cfg, indent=2) + "\n")  # holds the password
    return path


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only from the start (0600)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_installed(binary: str | None = None, plugin: str | None = None) -> None:
    """Raise a one-line error naming the apt packages when Orthanc or its DICOMweb plugin is missing."""
    for what in (binary or ORTHANC_BIN, plugin or DICOMWEB_PLUGIN):
        if not Path(what).exists():
            raise MeddxError(f"{what} not found: install Orthanc with `{APT_LINE}`")


def run_orthanc(storage: str | Path, http_port: int = 8042, dicom_port: int = 4242,
                credentials: str | Path | None = None) -> int:
    """Write the configuration in `storage` and run Orthanc in the foreground; its exit code (Ctrl-C stops it)."""
    check_installed()
    config = write_config(storage, http_port, dicom_port, credentials)
    cred = credentials or Path(storage) / "credentials"
    log.info("Orthanc on http://127.0.0.1:%d (DICOMweb at /dicom-web/, DICOM port %d); credentials in %s",
             http_port, dicom_port, cred)
    proc = subprocess.Popen([ORTHANC_BIN, str(config)], cwd=str(storage))

    def forward(signum: int, frame: Any) -> None:  # SIGTERM (service managers, tests): stop Orthanc cleanly
        proc.terminate()

    previous = signal.signal(signal.SIGTERM, forward) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
