"""The service's guards: the bearer token (read once, compared in constant time, never logged), and uploads
written into a private temporary folder with size limits; zips of DICOM series checked before anything is
extracted (no absolute or '..' names, no links, bounded member count and uncompressed size)."""

from __future__ import annotations

import hmac
import os
import stat
import zipfile
from pathlib import Path

from meddx.errors import ConfigError, InputError

TOKEN_ENV = "MEDDX_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_ZIP_MEMBERS = 5000
ZIP_MAGIC = b"PK\x03\x04"
KNOWN_SUFFIXES = (".nii.gz", ".img.gz", ".dcm", ".dicom", ".ima", ".nii", ".hdr", ".img", ".nrrd", ".nhdr", ".mha",
                  ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".mp4", ".avi", ".mov",
                  ".mpg", ".mpeg", ".mkv", ".webm", ".npy", ".zip")


class UploadTooLarge(InputError):
    """The request body or an archive's content is over the configured limit (HTTP 413)."""


def read_token(token_file: str | None) -> str:
    """The bearer token from `token_file` (first line) or $MEDDX_TOKEN; ConfigError when there is none or it is
    too short to be a secret."""
    if token_file:
        p = Path(token_file)
        try:
            token = p.read_text(encoding="utf-8").strip().splitlines()[0].strip() if p.stat().st_size else ""
        except (OSError, UnicodeDecodeError, IndexError):
            raise ConfigError("cannot read the token file", token_file) from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"no bearer token: give --token-file FILE or set {TOKEN_ENV} (e.g. `export {TOKEN_ENV}="
                          "$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the bearer token is too short (at least {MIN_TOKEN_CHARS} characters)")
    return token


def token_ok(header: str | None, token: str) -> bool:
    """True when an Authorization header is `Bearer <token>` (constant-time comparison)."""
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer "):].strip().encode("utf-8", "replace")
    return hmac.compare_digest(given, token.encode("utf-8"))


def upload_suffix(filename: str | None) -> str:
    """The known image suffix of an uploaded file's name ('' when unknown); the name itself is never kept."""
    name = (filename or "").lower().strip()
    for s in KNOWN_SUFFIXES:
        if name.endswith(s):
            return s
    return ""


def is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def _member_ok(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is refused, or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "'..' in a path"
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    if info.flag_bits & 0x1:
        return "encrypted member"
    return None


def safe_extract(archive: Path, dest: Path, max_bytes: int, max_members: int = MAX_ZIP_MEMBERS) -> Path:
    """Extract a zip into `dest` after checking every member name, type, count and the declared total size;
    the bytes written are counted too (a member lying about its size stops at the limit). Returns `dest`."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError("not a readable zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UploadTooLarge(f"zip has {len(infos)} members (limit {max_members})")
        total = 0
        for info in infos:
            why = _member_ok(info)
            if why:
                raise InputError(f"zip member refused: {why}")
            total += info.file_size
        if total > max_bytes:
            raise UploadTooLarge(f"zip expands to {total} bytes (limit {max_bytes}): refused")
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        written = 0
        for i, info in enumerate(infos):
            if info.is_dir():
                continue
            # Flat, generated names: nothing of the archive's paths reaches the file system.
            target = dest / f"{i:05d}.dcm"
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise UploadTooLarge(f"zip expands to more than {max_bytes} bytes: refused")
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                raise InputError(f"corrupt zip member ({type(exc).__name__})") from None
        if written == 0:
            raise InputError("zip contains no files")
    return dest
