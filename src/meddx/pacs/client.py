"""Orthanc over HTTP: its change feed (REST) and DICOMweb (QIDO-RS, WADO-RS, STOW-RS via dicomweb-client).

Errors become `NetworkError` with the operation and HTTP status only: request URLs hold Study/Series UIDs,
which are identifiers and must not reach logs.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from meddx.errors import ConfigError, NetworkError

log = logging.getLogger(__name__)

CREDENTIALS_ENV = "MEDDX_ORTHANC_CREDENTIALS"


class NotFound(NetworkError):
    """Orthanc answered 404: the resource (e.g. a study deleted since its change) is not there."""


@contextmanager
def _http(what: str) -> Iterator[None]:
    """Turn requests/HTTP failures into a NetworkError naming `what` and the status, never the URL."""
    import requests

    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise (NotFound if status == 404 else NetworkError)(f"Orthanc {what}: HTTP {status}") from None
    except requests.RequestException as exc:
        raise NetworkError(f"Orthanc {what}: {type(exc).__name__}") from None


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute (PN as its Alphabetic string), else None."""
    v = (item.get(tag) or {}).get("Value") or [None]
    first = v[0]
    return first.get("Alphabetic") if isinstance(first, dict) else first


class OrthancClient:
    """Orthanc at `url` (e.g. http://127.0.0.1:8042) with basic-auth `credentials` (user, password) or none."""

    def __init__(self, url: str, credentials: tuple[str, str] | None = None, timeout: float = 120.0) -> None:
        try:
            import requests
            from dicomweb_client import DICOMwebClient
        except ImportError:
            raise ConfigError("meddx pacs needs dicomweb-client: pip install 'meddx[serve]'") from None

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if credentials:
            self.session.auth = credentials
        self.dicomweb = DICOMwebClient(f"{self.url}/dicom-web", session=self.session)

    def _get(self, path: str, what: str, **params: Any) -> Any:
        with _http(what):
            r = self.session.get(f"{self.url}{path}", params=params or None, timeout=self.timeout)
            r.raise_for_status()
            return r.json()

    def changes(self, since: int, limit: int = 100) -> dict[str, Any]:
        """One page of /changes after sequence number `since`: {"Changes": [...], "Done": bool, "Last": int}."""
        return self._get("/changes", "change feed", since=int(since), limit=int(limit))

    def study_uid(self, orthanc_id: str) -> str:
        """The StudyInstanceUID of an Orthanc study id."""
        info = self._get(f"/studies/{orthanc_id}", "study lookup")
        uid = (info.get("MainDicomTags") or {}).get("StudyInstanceUID")
        if not uid:
            raise NetworkError("Orthanc study lookup: no StudyInstanceUID")
        return str(uid)

    def series(self, study_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS: the study's series as {uid, modality, body_part, description, count}."""
        fields = ("SeriesDescription", "BodyPartExamined", "NumberOfSeriesRelatedInstances", "Manufacturer")
        with _http("QIDO-RS series search"):  # plain request: one Accept type (Orthanc logs an error for two)
            r = self.session.get(f"{self.url}/dicom-web/studies/{study_uid}/series",
                                 params=[("includefield", f) for f in fields],
                                 headers={"Accept": "application/dicom+json"}, timeout=self.timeout)
            r.raise_for_status()
            found = r.json() if r.content else []
        return [{"uid": _value(s, "0020000E"), "modality": _value(s, "00080060") or "",
                 "body_part": _value(s, "00180015") or "", "description": _value(s, "0008103E") or "",
                 "manufacturer": _value(s, "00080070") or "", "count": int(_value(s, "00201209") or 0)}
                for s in found]

    def retrieve_series(self, study_uid: str, series_uid: str, folder: str | Path) -> int:
        """WADO-RS: write every instance of one series into `folder`, one at a time (memory stays one instance
        deep); the number written."""
        folder = Path(folder)
        n = 0
        with _http("WADO-RS series retrieve"):
            for ds in self.dicomweb.iter_series(study_uid, series_uid):
                ds.save_as(folder / f"{n:05d}.dcm", enforce_file_format=True)
                n += 1
        return n

    def store(self, datasets: list[Any]) -> None:
        """STOW-RS the datasets (into their own study); NetworkError if Orthanc refused any."""
        with _http("STOW-RS store"):
            res = self.dicomweb.store_instances(datasets)
        failed = res.get("FailedSOPSequence") if res is not None else None
        if failed:
            raise NetworkError(f"Orthanc STOW-RS store: {len(failed)} of {len(datasets)} instances refused")


def load_credentials(credentials: str | Path | None) -> tuple[str, str] | None:
    """(user, password) from `credentials` (a `user:password` file), else $MEDDX_ORTHANC_CREDENTIALS, else None."""
    from meddx.pacs.orthanc import read_credentials

    path = credentials or os.environ.get(CREDENTIALS_ENV)
    return read_credentials(path) if path else None
