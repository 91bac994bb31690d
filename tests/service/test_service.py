"""`meddx serve`'s API through FastAPI's test client: the token, uploads good and hostile, the queue limit, the
results store the viewer reads, reports, and no PHI of the deid-data DICOMs in any log line or JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from meddx.errors import ConfigError  # noqa: E402
from meddx.service.server import create_app, load_predictors, model_names, serve  # noqa: E402
from tests.service.helpers import (AUTH, TOKEN, demo_volume, dicom_series_zip, huge_png, png_bytes,  # noqa: E402
                                   zip_bytes)

REPO = Path(__file__).resolve().parents[2]
DEMO_CLS = REPO / "tests" / "fixtures" / "runs" / "demo_cls"


@pytest.fixture(scope="module")
def predictors() -> dict[str, Any]:
    return load_predictors([DEMO_CLS])


@pytest.fixture()
def client(predictors: dict[str, Any], tmp_path: Path) -> Any:
    app = create_app(predictors, TOKEN, tmp_path / "results", workers=2, queue=8, max_upload_mb=1,
                     tmp_root=tmp_path, orthanc_url="http://127.0.0.1:8042")
    with TestClient(app) as c:
        yield c


@pytest.fixture()
def records() -> Any:
    """Every log record of the meddx loggers (audit lines included), whatever the handlers configured."""
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    h = Keep(level=logging.DEBUG)
    lg = logging.getLogger("meddx")
    old = lg.level
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    yield got
    lg.removeHandler(h)
    lg.setLevel(old)


def _predict(client: Any, data: bytes, name: str = "x.png", **params: Any) -> Any:
    return client.post("/v1/predict", headers=AUTH, params=params, files={"file": (name, data)})


def test_every_v1_route_needs_the_token(client: Any) -> None:
    assert client.get("/healthz").status_code == 200  # liveness stays open, says nothing about studies
    for method, path in [("get", "/v1/models"), ("get", "/v1/studies"), ("post", "/v1/predict"),
                         ("post", "/v1/report"), ("get", "/v1/studies/x/files/image.bin")]:
        r = getattr(client, method)(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        r = getattr(client, method)(path, headers={"Authorization": "Bearer wrong-token-of-some-length"})
        assert r.status_code == 401, path
    assert client.get("/v1/models", headers={"Authorization": TOKEN}).status_code == 401  # no "Bearer "
    assert client.get("/v2/anything").status_code == 401  # default deny: only a few paths are public
    assert client.get("/static/viewer.js").status_code == 200 and client.get("/").status_code == 200
    assert client.get("/v1/models", headers=AUTH).status_code == 200


def test_models_and_openapi(client: Any) -> None:
    m = client.get("/v1/models", headers=AUTH).json()["models"]
    assert [x["name"] for x in m] == ["demo_cls"]
    assert m[0]["classes"] == ["lesion", "normal"] and m[0]["kind"] == "classifier"
    assert "auc" in m[0]["validation_metrics"] and m[0]["input"]["spatial_ndim"] == 2
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_predict_png_is_stored_for_the_viewer(client: Any) -> None:
    r = _predict(client, png_bytes(1))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["probabilities"]) == {"lesion", "normal"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["label"] in body["probabilities"] and body["threshold"] == pytest.approx(0.6439, abs=1e-3)
    assert "in_distribution" in body  # the demo RUN is fingerprinted: the OOD gate's fields come through
    listed = client.get("/v1/studies", headers=AUTH).json()
    assert listed["orthanc_url"] == "http://127.0.0.1:8042"
    assert [s["id"] for s in listed["studies"]] == [body["id"]]
    png = client.get(body["links"]["overlay"], headers=AUTH)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    study = client.get(body["links"]["study"], headers=AUTH).json()
    shape = study["view"]["shape"]
    arr = client.get(f"/v1/studies/{body['id']}/files/image.bin", headers=AUTH).content
    assert len(arr) == shape[0] * shape[1] * shape[2]
    # the store refuses names outside its own files (no path tricks through the viewer's data route)
    assert client.get(f"/v1/studies/{body['id']}/files/..%2f..%2fetc%2fpasswd", headers=AUTH).status_code == 404
    assert client.get("/v1/studies/..%2f..%2fetc", headers=AUTH).status_code == 404
    # raw body upload with the suffix as a query hint works too
    r2 = client.post("/v1/predict", headers=AUTH, params={"filename": "a.png", "save": "false"},
                     content=png_bytes(2))
    assert r2.status_code == 200 and r2.json()["label"] in ("lesion", "normal")


def test_predict_volume_and_zip_series(client: Any, tmp_path: Path) -> None:
    vol = demo_volume(tmp_path / "vol.nii.gz").read_bytes()
    r = _predict(client, vol, "study.nii.gz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["slice_scores"]) == 12 and body["input"]["spacing"] == [3.0, 0.8, 0.8]
    z = client.post("/v1/predict", headers=AUTH, files={"file": ("s.zip", dicom_series_zip(tmp_path / "ser"))})
    assert z.status_code == 200, z.text
    assert z.json()["input"]["modality"] == "CT" and z.json()["input"]["shape"][0] == 4
    study = client.get(z.json()["links"]["study"], headers=AUTH).json()
    assert study["view"]["dtype"] == "int16" and "lung" in study["view"]["presets"]  # CT: window/level presets


def _bad_uploads(tmp_path: Path) -> list[tuple[str, str, bytes, int]]:
    from tests.faults.hostile_cases import dicom

    full = dicom(tmp_path / "t.dcm").read_bytes()
    bomb = zip_bytes({"a.dcm": b"\x00" * (6 * 1024 * 1024)})  # 6 MB of zeros -> ~6 kB; limit 4 x 1 MB
    return [
        ("not an image", "notes.png", b"this is a text file, not an image\n" * 20, 422),
        ("text without suffix", "upload", b"plain words " * 50, 415),
        ("truncated DICOM", "t.dcm", full[: len(full) // 3], 422),
        ("zip bomb", "s.zip", bomb, 413),
        ("traversal name", "s.zip", zip_bytes({"../../evil.dcm": full}), 422),
        ("absolute name", "s.zip", zip_bytes({"/etc/evil.dcm": full}), 422),
        ("symlink member", "s.zip", zip_bytes({"a.dcm": full}, symlinks={"b.dcm": "/etc/passwd"}), 422),
        ("broken zip", "s.zip", b"PK\x03\x04" + b"\x00" * 200, 415),
        ("huge dimensions", "big.png", huge_png(), 413),
        ("over the upload limit", "x.png", b"\x89PNG" + b"\x00" * (2 * 1024 * 1024), 413),
        ("empty", "x.png", b"", 422),
    ]


def test_bad_uploads_get_4xx_and_the_server_keeps_serving(client: Any, tmp_path: Path, records: list) -> None:
    good = png_bytes(3)
    for what, name, data, code in _bad_uploads(tmp_path):
        r = _predict(client, data, name)
        assert r.status_code == code, (what, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and "meddx-upload" not in detail, (what, detail)
        assert name not in detail or name == "upload"
        ok = _predict(client, good)
        assert ok.status_code == 200, (what, ok.text)
    # nothing left behind in the private upload folders; nothing stored for refused uploads
    assert not list(tmp_path.glob("meddx-upload-*"))
    studies = client.get("/v1/studies", headers=AUTH).json()["studies"]
    assert len(studies) == len(_bad_uploads(tmp_path))
    audit = [r.getMessage() for r in records if r.name == "meddx.service.audit"]
    assert sum("outcome=bad_upload" in a or "outcome=too_large" in a for a in audit) == len(studies)
    assert all("Bearer" not in a and TOKEN not in a for a in audit)


class _Slow:
    """A predictor that takes `delay` seconds per model call (to fill the queue)."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, image: Any, **kw: Any) -> Any:
        time.sleep(self.delay)
        return self.inner.predict(image, **kw)

    def predict_batch(self, images: Any, **kw: Any) -> Any:
        time.sleep(self.delay)
        return self.inner.predict_batch(images, **kw)


def test_503_when_the_queue_is_full_then_serving_again(predictors: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    slow = {"demo_cls": _Slow(predictors["demo_cls"], 0.6)}
    app = create_app(slow, TOKEN, tmp_path / "res", workers=1, queue=2, tmp_root=tmp_path)
    data = png_bytes(4)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            async def one() -> int:
                r = await c.post("/v1/predict", headers=AUTH, params={"heatmap": "false"},
                                 files={"file": ("a.png", data)})
                return r.status_code
            codes = await asyncio.gather(*[one() for _ in range(8)])
            again = await one()
            return [*codes, again]

    try:
        codes = asyncio.run(burst())
    finally:
        app.state.meddx.pool.close()
    assert codes[:-1].count(503) >= 4 and codes[:-1].count(200) >= 2, codes
    assert set(codes[:-1]) <= {200, 503}
    assert codes[-1] == 200  # and it serves again once the burst is over


def test_report_html_and_pdf_are_stored_with_the_study(client: Any) -> None:
    r = client.post("/v1/report", headers=AUTH, files={"file": ("x.png", png_bytes(5))})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "data:image/png;base64," in r.text  # one self-contained file
    sid = r.headers["x-study-id"]
    assert client.get(f"/v1/studies/{sid}", headers=AUTH).json()["attachments"] == ["report.html", "report.pdf"]
    pdf = client.get(f"/v1/studies/{sid}/files/report.pdf", headers=AUTH)
    assert pdf.content.startswith(b"%PDF")
    r = client.post("/v1/report", headers=AUTH, params={"format": "pdf"}, files={"file": ("x.png", png_bytes(6))})
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert client.post("/v1/report", headers=AUTH, params={"format": "doc"},
                       files={"file": ("x.png", b"x")}).status_code == 400


def test_unknown_model_is_404(client: Any) -> None:
    assert _predict(client, png_bytes(0), model="nope").status_code == 404


def _phi_values() -> tuple[list[Path], set[str]]:
    deid_data = pytest.importorskip("deid_data")
    import pydicom

    root = Path(deid_data.__file__).parent / "data"
    files = sorted((root / "humans").glob("*.dcm")) + sorted((root / "dicom-cookies").glob("*.dcm"))[:2]
    if not files:
        pytest.skip("deid_data has no DICOM files")
    values: set[str] = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for el in ds.iterall():
            if el.VR in ("PN", "DA", "LO", "SH", "DT") and el.value not in (None, ""):
                for v in (el.value if el.VM > 1 else [el.value]):
                    for part in str(v).replace("^", " ").split():
                        if len(part) >= 5 and not part.replace(".", "").isdigit() or (
                                len(part) == 8 and part.isdigit()):
                            values.add(part)
        values.add(f.stem)
    return files, values


def test_no_phi_from_deid_data_in_logs_json_or_store(client: Any, tmp_path: Path, records: list) -> None:
    files, phi = _phi_values()
    assert {"SIMPSON", "HOMER", "ctbrain1"} <= phi or len(phi) > 10
    bodies = []
    for f in files:
        r = client.post("/v1/predict", headers=AUTH, files={"file": (f.name, f.read_bytes())})
        assert r.status_code in (200, 413, 415, 422), r.text
        bodies.append(r.text)
    assert sum('"label"' in b for b in bodies) >= 2  # real predictions were made (not only refusals)
    r = client.post("/v1/report", headers=AUTH, files={"file": (files[0].name, files[0].read_bytes())})
    assert r.status_code == 200
    bodies.append(client.get("/v1/studies", headers=AUTH).text)
    store = client.app.state.meddx.results
    stored = [p.read_text(encoding="utf-8", errors="replace") for p in store.rglob("*.json")]
    stored += [p.read_text(encoding="utf-8", errors="replace") for p in store.rglob("*.html")]
    logs = [r.getMessage() for r in records]
    assert any("audit" in line for line in logs)
    leaks = {v for v in phi for text in bodies + stored + logs if v.lower() in text.lower()}
    assert not leaks, sorted(leaks)[:10]
    assert json.loads(bodies[0])  # the JSON is there, just without identifiers


def test_serve_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDDX_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="no bearer token"):
        serve([DEMO_CLS])
    short = tmp_path / "t"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="too short"):
        serve([DEMO_CLS], token_file=str(short))


def test_orthanc_url_must_be_http(predictors: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http"):
        create_app(predictors, TOKEN, tmp_path, orthanc_url="javascript:alert(1)")


def test_model_names_are_unique_and_url_safe() -> None:
    assert model_names(["/a/run one", "/b/run one", "/c/x"]) == ["run-one", "run-one-2", "x"]


def test_serve_refuses_a_port_in_use_before_loading_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("MEDDX_TOKEN", TOKEN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            serve(["/no/such/run"], port=s.getsockname()[1])  # the port is checked first
