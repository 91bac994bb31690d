"""Acceptance: a real Orthanc on loopback, the watcher with the demo RUN, the CT series uploaded by STOW-RS ->
a TID 1500 SR in the same study found by QIDO-RS within 2 minutes; a second upload creates nothing new."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meddx.pacs.orthanc import DICOMWEB_PLUGIN, ORTHANC_BIN

REPO = Path(__file__).resolve().parents[2]
DEMO_RUN = REPO / "tests" / "fixtures" / "runs" / "demo_cls"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(ORTHANC_BIN).exists() or not Path(DICOMWEB_PLUGIN).exists(),
                       reason="Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc "
                              "orthanc-dicomweb)"),
]


pytest.importorskip("dicomweb_client", reason="dicomweb-client is not installed (pip install 'meddx[serve]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group (run_orthanc and Orthanc stop cleanly), then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """`run_orthanc` in a subprocess on free loopback ports; yields (url, credentials file, requests session)."""
    import requests

    storage = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = _free_port(), _free_port()
    code = ("import sys; from meddx.pacs.orthanc import run_orthanc; "
            f"sys.exit(run_orthanc({str(storage)!r}, http_port={http_port}, dicom_port={dicom_port}))")
    log = open(storage / "orthanc.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(storage))
    url = f"http://127.0.0.1:{http_port}"
    session = requests.Session()
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited with {proc.returncode}: {(storage / 'orthanc.log').read_text()[-2000:]}")
            cred = storage / "credentials"
            if cred.exists():
                session.auth = tuple(cred.read_text().strip().split(":", 1))
                try:
                    if session.get(f"{url}/system", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                pytest.fail("Orthanc did not answer within 60 s")
            time.sleep(0.3)
        assert requests.get(f"{url}/system", timeout=5).status_code == 401  # authentication is on
        yield url, storage / "credentials", session
    finally:
        _stop_group(proc)
        log.close()
    assert proc.returncode is not None


@pytest.fixture(scope="module")
def watcher(orthanc, tmp_path_factory):
    """The watcher (demo RUN loaded once) following the feed in a thread; stopped and joined after."""
    from meddx.pacs.watch import build_watcher

    url, cred, _ = orthanc
    tmp = tmp_path_factory.mktemp("watch")
    w = build_watcher(url, [DEMO_RUN], credentials=cred, state=tmp / "state", results=tmp / "results",
                      poll_s=0.5, backoff_s=1.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            errors.append(exc)

    t = threading.Thread(target=run, name="meddx-pacs-watch", daemon=True)
    t.start()
    try:
        yield w, tmp / "results", errors
    finally:
        w.stop.set()
        t.join(timeout=120)
        w.state.close()
    assert not t.is_alive(), "watcher thread did not stop"


def _series(client, study_uid):
    return {s["0020000E"]["Value"][0]: (s["00080060"]["Value"][0], int(s["00201209"]["Value"][0]))
            for s in client.search_for_series(study_instance_uid=study_uid,
                                              fields=["NumberOfSeriesRelatedInstances"])}


def test_stow_upload_gets_an_sr_back_and_a_second_upload_nothing_new(orthanc, watcher, ct_dir, caplog):
    import highdicom as hd
    import pydicom
    from dicomweb_client import DICOMwebClient

    url, _, session = orthanc
    w, results, errors = watcher
    client = DICOMwebClient(f"{url}/dicom-web", session=session)
    datasets = [pydicom.dcmread(f) for f in sorted(ct_dir.iterdir()) if f.is_file()]
    study_uid, series_uid = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    caplog.set_level("INFO", logger="meddx.pacs")

    t0 = time.monotonic()
    client.store_instances(datasets)
    sr_series = []
    while time.monotonic() - t0 < 120 and not sr_series:
        assert not errors, errors
        sr_series = client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "SR"})
        time.sleep(1)
    took = time.monotonic() - t0
    assert sr_series, f"no SR in the study {took:.0f} s after the upload; state: {w.state.data}"
    print(f"SR found {took:.1f} s after the STOW-RS upload")

    # the SR: TID 1500, parsed by highdicom, references the uploaded series, says which model
    sr_uid = sr_series[0]["0020000E"]["Value"][0]
    (ds,) = client.retrieve_series(study_uid, sr_uid)
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == study_uid and sr.PatientName == datasets[0].PatientName
    refs = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [r.SeriesInstanceUID for r in refs] == [series_uid]
    assert len(refs[0].ReferencedSOPSequence) == len(datasets)
    groups = sr.content.get_image_measurement_groups()
    assert groups and groups[0].finding_type.scheme_designator == "SCT"
    assert sr.SeriesDescription == next(iter(w.models.values())).sr_description(series_uid)

    # wait for the watcher to drain the feed (our own SR/PDF made the study stable again: skipped)
    def drained() -> bool:
        last = session.get(f"{url}/changes", params={"last": ""}, timeout=10).json()["Last"]
        return w.state.last_seq >= last

    def settle(since: float) -> None:
        while time.monotonic() - since < 150:
            assert not errors, errors
            if time.monotonic() - since > 8 and drained():  # StableAge 5 s has passed and all was read
                return
            time.sleep(0.5)
        pytest.fail(f"watcher did not drain the change feed: {w.state.data}")

    settle(time.monotonic())
    before = _series(client, study_uid)
    assert sorted(m for m, _ in before.values()) == ["CT", "DOC", "SR"]  # classifier: SR + PDF, no SEG
    assert w.stats["processed"] == 1 and w.stats["failed"] == 0

    # the same study again: nothing new
    client.store_instances(datasets)
    settle(time.monotonic())
    assert _series(client, study_uid) == before
    assert w.stats["processed"] == 1 and w.stats["failed"] == 0

    # the viewer's results store lists it, without identifiers
    from meddx.app.results import list_results

    listed = list_results(results)
    assert len(listed) == 1 and listed[0]["orthanc_study"]
    # no identifiers in what the watcher logged
    phi = [str(datasets[0].PatientName), study_uid, series_uid]
    logged = caplog.text
    assert "series read by demo_cls" in logged
    assert not [v for v in phi if v and v in logged]
