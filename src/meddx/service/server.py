"""`meddx serve`: the HTTP inference service (FastAPI + uvicorn) and the clinicians' viewer at `/`.

Models are loaded once; uploads are written to private temporary files (removed once decoded), predicted in the
bounded `InferencePool` (503 when full), saved to the results store the viewer lists. Every `/v1`
route needs `Authorization: Bearer <token>`; each request leaves one audit line (request id, route, model,
status, milliseconds) and nothing of the upload (no file names, no DICOM identifiers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from meddx.errors import ConfigError, InputError, MeddxError
from meddx.service.pool import Busy, InferencePool
from meddx.service.security import UploadTooLarge, is_zip, read_token, safe_extract, token_ok, upload_suffix

log = logging.getLogger(__name__)
audit = logging.getLogger("meddx.service.audit")

STATIC = Path(__file__).parent / "static"
MAX_VOXELS = 2**28  # ~268 M voxels: a 1000-slice 512x512 CT fits, absurd headers do not
ZIP_EXPANSION = 4  # a zip may expand to this many times the upload limit
_report_lock = threading.Lock()  # the report's matplotlib figures are not thread-safe


class ServiceState:
    """What the routes share: predictors by name, the pool, the token, limits and folders."""

    def __init__(self, predictors: dict[str, Any], token: str, results: Path, workers: int, queue: int,
                 max_upload_mb: float, orthanc_url: str | None, tmp_root: Path) -> None:
        self.predictors = predictors
        self.token = token
        self.results = results
        self.max_bytes = int(max_upload_mb * 1024 * 1024)
        self.orthanc_url = orthanc_url.rstrip("/") if orthanc_url else None
        self.tmp_root = tmp_root
        self.pool = InferencePool(predictors, workers=workers, limit=queue)
        self.started = time.time()


def model_names(runs: Sequence[str | Path]) -> list[str]:
    """A unique, URL-safe name per RUN folder (its folder name; -2, -3 ... on clashes)."""
    names: list[str] = []
    for r in runs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(r).resolve().name).strip("-") or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def model_card(name: str, predictor: Any) -> dict[str, Any]:
    """What GET /v1/models says of one model (no training-data paths)."""
    info = predictor.info
    metrics = {k: v for k, v in (info.val_metrics or {}).items() if isinstance(v, (int, float, str, bool))}
    return {"name": name, "kind": predictor.kind, "task": info.task, "model": info.model,
            "classes": list(info.class_names), "positive_class": info.positive_class, "threshold": info.threshold,
            "input": {"spatial_ndim": info.spatial_ndim, "input_shape": list(info.input_shape),
                      "sequences": predictor.kind == "sequence_classifier"},
            "version": model_version(predictor), "validation_metrics": metrics}


def model_version(predictor: Any) -> str:
    info = predictor.info
    return f"meddx {info.meddx_version or '?'}, trained {info.created or '?'}"


def http_status(exc: Exception) -> int:
    """The HTTP status of a refused upload: 413 too large, 415 unsupported format, 422 unreadable content."""
    text = str(exc).lower()
    if isinstance(exc, UploadTooLarge) or "too large" in text or "exceeds the limit" in text or "max_voxels" in text \
            or "decompression bomb" in text or "exceeds limit" in text:
        return 413
    if "unsupported" in text or "not recognised" in text or "not a readable zip" in text:
        return 415
    return 422


def one_line(exc: Exception) -> str:
    """The error's message without the temporary path it may name (never a user's file name)."""
    msg = str(exc)
    path = getattr(exc, "path", None)
    if path and msg.startswith(f"{path}: "):
        msg = msg[len(path) + 2:]
    msg = re.sub(r"(/[^\s:'\"]*)?meddx-upload-[^\s:'\"]*", "upload", msg)
    return " ".join(msg.split())[:300] or type(exc).__name__


def _decoder(path: Path, predictor: Any) -> Any:
    """A function reading the saved upload as the model reads inputs (sequence RUNs: a frame study)."""

    def read() -> Any:
        if predictor.kind == "sequence_classifier":
            from meddx.app.common import read_input

            return read_input(path, sequences=True)
        from meddx.io import read_image

        return read_image(path, max_voxels=MAX_VOXELS)

    def decode() -> Any:
        try:
            return read()
        except MeddxError:
            raise
        except MemoryError:
            raise UploadTooLarge("image too large to decode") from None
        except Exception as exc:  # noqa: BLE001 - any library failure on an upload is the upload's problem
            if type(exc).__name__ == "DecompressionBombError":  # Pillow's check of the header's pixel count
                raise UploadTooLarge("image too large: its header claims more pixels than allowed") from None
            log.warning("upload could not be decoded: %s", type(exc).__name__)
            raise InputError(f"the upload could not be read as an image ({type(exc).__name__})") from None

    return decode


def _prediction_json(res: dict[str, Any], study_id: str) -> dict[str, Any]:
    """The JSON a client gets: the stored result (no PHI) plus links to the study, its overlay and the viewer."""
    out = {k: v for k, v in res.items() if k != "view"}
    view = res.get("view") or {}
    links = {"study": f"/v1/studies/{study_id}", "viewer": f"/#/study/{study_id}"}
    if view.get("key_images"):
        links["overlay"] = f"/v1/studies/{study_id}/files/{view['key_images'][0]}"
    if view.get("overlay"):
        links["overlay_array"] = f"/v1/studies/{study_id}/files/{view['overlay']}"
    out["links"] = links
    return out


def _render_report(predictor: Any, pred: Any, tmp: Path) -> dict[str, bytes]:
    """report.html (images inlined) and report.pdf of one prediction, as bytes."""
    from meddx.report import render_study_report

    info = predictor.info.to_dict()
    info.pop("data", None)
    if predictor.kind == "segmenter":
        info["task"] = "segmentation"
    out = tmp / "report"
    with _report_lock:
        paths = render_study_report(pred.to_study("upload"), info, out, include_phi=False)
    from meddx.app.results import inline_images

    html = inline_images(Path(paths["html"]).read_text(encoding="utf-8"), out)
    return {"report.html": html.encode("utf-8"), "report.pdf": Path(paths["pdf"]).read_bytes()}


SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer")]
# Reports opened from the viewer (blob: documents) inherit this policy: their inline styles apply, no script runs.
CSP = (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; style-src 'self' "
       b"'unsafe-inline'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
       b"form-action 'self'")


class Guard:
    """ASGI middleware in front of every route: request id, bearer token on /v1, the upload size limit by
    Content-Length, security headers, and one audit line per request (no query values, headers or file names)."""

    def __init__(self, app: Any, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:12]
        info = scope.setdefault("state", {})
        info.update(rid=rid, model="-", outcome="ok")
        path = scope.get("path", "")
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        status = [0]
        extra = [(b"x-request-id", rid.encode()), *SECURITY_HEADERS]
        if path == "/" or path.startswith("/static/"):
            extra.append(CSP)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in extra if h[0] not in have]
            await send(message)

        try:
            length = headers.get(b"content-length", b"")
            if not _public(path) and not token_ok(headers.get(b"authorization", b"").decode("latin-1"),
                                                        self.state.token):
                info["outcome"] = "unauthorised"
                await JSONResponse({"detail": "missing or invalid bearer token"}, status_code=401,
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send_with_headers)
            elif path.startswith("/v1/") and length.isdigit() and int(length) > self.state.max_bytes + 65536:
                info["outcome"] = "too_large"
                await JSONResponse({"detail": f"upload over the limit of {self.state.max_bytes} bytes"},
                                   status_code=413)(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback with request data
            log.error("request %s failed: %s", rid, type(exc).__name__)
            info["outcome"] = "error"
            if not status[0]:
                await JSONResponse({"detail": "internal error", "request_id": rid},
                                   status_code=500)(scope, receive, send_with_headers)
        finally:
            if not path.startswith("/static/") and path != "/favicon.ico":
                audit.info("audit request=%s method=%s route=%s model=%s status=%d outcome=%s ms=%.0f in_flight=%d",
                           rid, scope.get("method", "-"), _route(path), info.get("model", "-"), status[0],
                           info.get("outcome", "-"), 1000 * (time.perf_counter() - t0), self.state.pool.in_flight)


def create_app(predictors: dict[str, Any], token: str, results: str | Path, workers: int = 1, queue: int = 32,
               max_upload_mb: float = 512, orthanc_url: str | None = None, tmp_root: str | Path | None = None) -> Any:
    """The FastAPI application (tests call this with predictors already loaded; `serve` runs it)."""
    from meddx.app import results as store

    if not token:
        raise ConfigError("no bearer token")
    if orthanc_url and not re.match(r"^https?://[^\s\"'<>]+$", orthanc_url):
        raise ConfigError("--orthanc must be an http:// or https:// URL")
    tmp_root = Path(tmp_root or tempfile.gettempdir())
    state = ServiceState(predictors, token, Path(results), workers, queue, max_upload_mb, orthanc_url, tmp_root)
    state.results.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        await asyncio.to_thread(state.pool.close)

    app = FastAPI(lifespan=lifespan, title="meddx", version="1",
                  description="Medical image decision support: inference service and viewer. Every /v1 route needs "
                              "`Authorization: Bearer <token>`.")
    app.state.meddx = state

    app.add_middleware(Guard, state=state)

    def refuse(request: Request, status: int, reason: str, outcome: str) -> JSONResponse:
        request.state.outcome = outcome
        return JSONResponse({"detail": reason, "request_id": request.state.rid}, status_code=status)

    def pick_model(request: Request, model: str | None) -> str:
        if model is None and len(state.predictors) == 1:
            model = next(iter(state.predictors))
        if model not in state.predictors:
            request.state.outcome = "bad_request"
            raise HTTPException(404 if model else 400, "unknown model (see GET /v1/models)" if model else
                                "several models are loaded: give ?model=NAME")
        request.state.model = model
        return model

    def private_file(suffix: str, made: list[Path]) -> Path:
        """A new empty file only this process can read (0600, random name) under the temporary root."""
        fd, name = tempfile.mkstemp(prefix="meddx-upload-", suffix=suffix, dir=state.tmp_root)
        os.close(fd)
        made.append(Path(name))
        return Path(name)

    async def receive_upload(request: Request, made: list[Path]) -> Path:
        """The request body (raw, or the multipart field `file`) written to a private temporary file (only its
        suffix is kept); a zip is extracted into a private folder. Everything created is listed in `made`."""
        ctype = request.headers.get("content-type", "")
        written = 0
        name_hint = request.query_params.get("filename")
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=8)
            up = form.get("file")
            if up is None or isinstance(up, str):
                raise InputError("multipart upload needs a 'file' field")
            target = private_file(upload_suffix(up.filename or name_hint), made)
            with open(target, "wb") as out:
                while chunk := await up.read(1 << 20):
                    written += len(chunk)
                    if written > state.max_bytes:
                        raise UploadTooLarge(f"upload over the limit of {state.max_bytes} bytes")
                    out.write(chunk)
            await up.close()
        else:
            target = private_file(upload_suffix(name_hint), made)
            with open(target, "wb") as out:
                async for chunk in request.stream():
                    written += len(chunk)
                    if written > state.max_bytes:
                        raise UploadTooLarge(f"upload over the limit of {state.max_bytes} bytes")
                    out.write(chunk)
        if written == 0:
            raise InputError("empty upload")
        if is_zip(target):
            folder = Path(tempfile.mkdtemp(prefix="meddx-upload-", dir=state.tmp_root))
            made.append(folder)
            return await asyncio.to_thread(safe_extract, target, folder / "series", ZIP_EXPANSION * state.max_bytes)
        if target.suffix == ".zip":
            raise InputError("not a readable zip archive")
        return target

    def remove(made: list[Path]) -> None:
        for p in made:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    async def run_job(request: Request, model: str, finish: Any, options: dict[str, Any]) -> Any:
        """Receive the upload into private temporary files, predict it in the pool, always remove them."""
        made: list[Path] = []
        try:
            path = await receive_upload(request, made)
            decode = _decoder(path, state.predictors[model])

            def decode_and_remove() -> Any:  # the decoded arrays are in memory: the files can go at once
                try:
                    return decode()
                finally:
                    remove(made)

            return await state.pool.run(model, decode_and_remove, finish, options)
        finally:
            if any(p.exists() for p in made):  # refused before decoding (busy, too large, bad zip ...)
                await asyncio.to_thread(remove, made)

    async def guarded(request: Request, model: str, finish: Any, options: dict[str, Any]) -> Any:
        try:
            return await run_job(request, model, finish, options)
        except Busy:
            return refuse(request, 503, "busy: too many requests in flight, retry later", "busy")
        except UploadTooLarge as exc:
            return refuse(request, 413, one_line(exc), "too_large")
        except MeddxError as exc:
            code = http_status(exc)
            return refuse(request, code, one_line(exc), f"bad_upload_{code}")
        except (OSError, MemoryError, ValueError, TypeError, IndexError, KeyError, RuntimeError) as exc:
            log.warning("request %s: upload could not be decoded (%s)", request.state.rid, type(exc).__name__)
            return refuse(request, 422, f"the upload could not be read as an image ({type(exc).__name__})",
                          "bad_upload_422")

    @app.get("/healthz", include_in_schema=True)
    async def healthz() -> dict[str, Any]:
        """Liveness: no token needed, nothing about studies."""
        batches = state.pool.batches[-200:]
        return {"status": "ok", "models": len(state.predictors), "in_flight": state.pool.in_flight,
                "queue_limit": state.pool.limit, "uptime_s": round(time.time() - state.started),
                "mean_batch": round(sum(batches) / len(batches), 2) if batches else None}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The loaded models: name, kind, task, classes, input kind, validation metrics."""
        return {"models": [model_card(n, p) for n, p in state.predictors.items()]}

    @app.post("/v1/predict")
    async def predict(request: Request, model: str | None = None, heatmap: bool = True,
                      save: bool = True) -> Any:
        """Predict one upload (image, DICOM file, zip of a DICOM series, NIfTI, video) sent as the raw body or the
        multipart field `file`: probabilities, label, threshold, lesion candidates with physical sizes, OOD
        fields when the model has them, and links to the stored study and its overlay."""
        name = pick_model(request, model)
        predictor = state.predictors[name]
        study_id = store.new_study_id()

        def finish(image: Any, pred: Any) -> dict[str, Any]:
            if save:
                res = store.store_prediction(state.results, study_id, pred, name,
                                             model_version=model_version(predictor))
            else:
                res = store.result_dict(study_id, pred, name, model_version(predictor))
            return _prediction_json(res, study_id)

        options = {"heatmap": heatmap} if predictor.kind == "classifier" else {}
        out = await guarded(request, name, finish, options)
        if isinstance(out, Response):
            return out
        out["request_id"] = request.state.rid
        return JSONResponse(out)

    @app.post("/v1/report")
    async def report(request: Request, model: str | None = None, format: str = "html") -> Any:  # noqa: A002
        """The study report of one upload: HTML (images inlined) or `format=pdf`; also stored with the study."""
        if format not in ("html", "pdf"):
            raise HTTPException(400, "format is html or pdf")
        name = pick_model(request, model)
        predictor = state.predictors[name]
        study_id = store.new_study_id()

        def finish(image: Any, pred: Any) -> dict[str, bytes]:
            with tempfile.TemporaryDirectory(prefix="meddx-report-", dir=state.tmp_root) as tmp:
                files = _render_report(predictor, pred, Path(tmp))
            store.save_result(state.results, study_id, pred, name, model_version=model_version(predictor),
                              attachments=files)
            return files

        out = await guarded(request, name, finish, {})
        if isinstance(out, Response):
            return out
        headers = {"X-Study-ID": study_id}
        if format == "pdf":
            return Response(out["report.pdf"], media_type="application/pdf", headers=headers)
        return HTMLResponse(out["report.html"].decode("utf-8"), headers=headers)

    @app.get("/v1/studies")
    async def studies() -> dict[str, Any]:
        """The worklist: every stored study's summary, newest first."""
        rows = await asyncio.to_thread(store.list_results, state.results)
        keep = ("id", "created", "status", "model", "kind", "label", "probability", "threshold", "positive_class",
                "in_distribution", "ood_score", "orthanc_study", "input")
        return {"orthanc_url": state.orthanc_url,
                "studies": [{k: r[k] for k in keep if k in r} | {"n_lesions": len(r.get("lesions") or [])}
                            for r in rows]}

    @app.get("/v1/studies/{study_id}")
    async def study(study_id: str) -> dict[str, Any]:
        """One stored study's result (no PHI), with the Orthanc URL the viewer links to."""
        try:
            res = store.load_result(state.results, study_id)
        except InputError:
            raise HTTPException(404, "no such study") from None
        res["orthanc_url"] = state.orthanc_url
        return res

    @app.get("/v1/studies/{study_id}/files/{name}")
    async def study_file(study_id: str, name: str) -> Any:
        """One of a study's viewer files (image/overlay arrays, key PNGs, report)."""
        try:
            path = store.study_file(state.results, study_id, name)
        except InputError:
            raise HTTPException(404, "no such file") from None
        media = {".png": "image/png", ".json": "application/json", ".html": "text/html",
                 ".pdf": "application/pdf"}.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app


PUBLIC_PATHS = frozenset({"/", "/healthz", "/docs", "/openapi.json", "/favicon.ico"})


def _public(path: str) -> bool:
    """Paths served without the token (the viewer's static page, liveness, the API description); every other
    path, all of /v1 included, needs it (default deny)."""
    return path in PUBLIC_PATHS or (path.startswith("/static/") and ".." not in path)


def _route(path: str) -> str:
    """The path for the audit line with study ids kept (they are random) and anything else odd cut short."""
    return re.sub(r"[^A-Za-z0-9/._-]", "?", path)[:120]


def load_predictors(runs: Sequence[str | Path]) -> dict[str, Any]:
    """name -> predictor for each RUN, loaded once."""
    from meddx.infer import load

    return {name: load(r) for name, r in zip(model_names(runs), runs)}


def _check_port(host: str, port: int) -> None:
    """ConfigError (one line) when `host:port` cannot be listened on, before the models are loaded."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except (OSError, IndexError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, token_file: str | None = None,
          workers: int = 1, queue: int = 32, max_upload_mb: float = 512, results: str | Path | None = None,
          orthanc_url: str | None = None) -> None:
    """Load the RUNs, then serve the API and the viewer with uvicorn until interrupted."""
    import uvicorn

    token = read_token(token_file)  # before the (slow) model loading: refuse at once without a token
    if workers < 1 or queue < 1 or max_upload_mb <= 0:
        raise ConfigError("--workers and --queue must be >= 1 and --max-upload-mb > 0")
    _check_port(host, port)
    predictors = load_predictors(runs)
    tmp_results = None
    if results is None:
        tmp_results = tempfile.mkdtemp(prefix="meddx-results-")
        results = tmp_results
    app = create_app(predictors, token, results, workers=workers, queue=queue, max_upload_mb=max_upload_mb,
                     orthanc_url=orthanc_url)
    where = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "the network: put TLS in front"
    log.info("serving %d model(s) (%s) on http://%s:%d (%s); viewer at /, API docs at /docs; results in %s",
             len(predictors), ", ".join(predictors), host, port, where, results)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
    finally:
        if tmp_results:
            shutil.rmtree(tmp_results, ignore_errors=True)
