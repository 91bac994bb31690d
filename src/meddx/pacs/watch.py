"""`meddx pacs watch`: follow Orthanc's change feed; for each stable study, fetch its series (WADO-RS), predict
with the routed RUN (loaded once) and store the SR / SEG / PDF back into the same study (STOW-RS).

Idempotent (a series done by the same model name+version, in the state or as an SR in Orthanc, is skipped; a
series added to a study later is read when the study becomes stable again),
restart-safe (the last finished change is persisted atomically) and failures are retried with back-off, then
recorded as failed; logs name studies by a hash, never by a DICOM identifier.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from meddx.errors import ConfigError, MeddxError, NetworkError
from meddx.pacs.derive import Model, derived_objects, in_distribution, load_model
from meddx.pacs.routing import Routing, load_routing
from meddx.pacs.state import WatchState, study_key

log = logging.getLogger(__name__)

STABLE_STUDY = "StableStudy"


def _error_text(exc: BaseException) -> str:
    """The failure as one line (type and meddx's own message; other libraries' messages may quote data)."""
    if isinstance(exc, MeddxError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


class Watcher:
    """The watch loop over one Orthanc `client`, with `models` by name, `routing` and a `state`."""

    def __init__(self, client: Any, models: dict[str, Model], routing: Routing, state: WatchState,
                 results: str | Path | None = None, max_attempts: int = 5, backoff_s: float = 2.0,
                 max_backoff_s: float = 60.0, poll_s: float = 1.0, sleep: Callable[[float], Any] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.client, self.models, self.routing, self.state = client, models, routing, state
        self.results = Path(results) if results else None
        self.max_attempts, self.backoff_s, self.max_backoff_s = max_attempts, backoff_s, max_backoff_s
        self.poll_s = poll_s
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait
        self.stats = {"processed": 0, "skipped": 0, "failed": 0}
        # series are fetched under the (locked) state folder, so a killed watcher's leftovers are removed here
        self.work = self.state.folder / "work"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(mode=0o700)

    # -- the feed ---------------------------------------------------------------------------------
    def run(self, once: bool = False) -> dict[str, int]:
        """Follow the change feed until stopped (or, `once`, until it is drained); counts of studies."""
        failures = 0
        while not self.stop.is_set():
            try:
                page = self.client.changes(self.state.last_seq)
                failures = 0
            except NetworkError as exc:
                failures += 1
                wait = self._backoff(failures)
                log.warning("change feed unavailable (%s); retrying in %.0f s", exc, wait)
                if once and failures >= self.max_attempts:
                    raise
                self._sleep(wait)
                continue
            changes = page.get("Changes") or []
            for change in changes:
                if change.get("ChangeType") == STABLE_STUDY and change.get("ResourceType", "Study") == "Study":
                    if not self.handle_study(str(change["ID"])):
                        return dict(self.stats)  # stopped mid-study: resume from this change next time
                self.state.advance(int(change["Seq"]))
                if self.stop.is_set():
                    return dict(self.stats)
            if not changes and int(page.get("Last") or 0) > self.state.last_seq:
                self.state.advance(int(page["Last"]))
            if page.get("Done", True):
                if once:
                    break
                self._sleep(self.poll_s)
        return dict(self.stats)

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))

    # -- one study ---------------------------------------------------------------------------------
    def handle_study(self, orthanc_id: str) -> bool:
        """Process one stable study, retrying with back-off; after the last attempt it is recorded as failed.

        False when the watcher was stopped before the study was finished (the change is then not advanced)."""
        label = f"study {orthanc_id[:8]}"
        for attempt in range(1, self.max_attempts + 1):
            try:
                self.process_study(orthanc_id)
                return True
            except Exception as exc:  # noqa: BLE001 -- any failure is retried, then recorded: never dropped
                err = _error_text(exc)
                log.debug("%s: traceback (may quote data; debug level only)", label, exc_info=True)
                if attempt == self.max_attempts:
                    log.error("%s: failed after %d attempts (%s); recorded as failed", label, attempt, err)
                    self.state.mark_failed(f"orthanc:{orthanc_id}", err, attempt)
                    self.stats["failed"] += 1
                    self._save_failure(orthanc_id, err)
                    return True
                wait = self._backoff(attempt)
                log.warning("%s: attempt %d/%d failed (%s); retrying in %.0f s", label, attempt,
                            self.max_attempts, err, wait)
                self._sleep(wait)
                if self.stop.is_set():
                    return False
        return True

    def process_study(self, orthanc_id: str) -> None:
        """Route the study's image series to models; predict and store for each model not done yet."""
        from meddx.pacs.client import NotFound

        try:
            study_uid = self.client.study_uid(orthanc_id)
        except NotFound:  # deleted since it became stable: Orthanc answered, there is nothing to read
            log.info("study %s: no longer in Orthanc; skipped", orthanc_id[:8])
            self.stats["skipped"] += 1
            return
        skey = study_key(study_uid)
        series = self.client.series(study_uid)
        plan: dict[str, list[tuple[dict[str, Any], bool]]] = {}
        for s in series:
            choice = self.routing.choose(s)
            if choice:
                plan.setdefault(choice[0], []).append((s, choice[1]))
        if not plan:
            log.info("study %s: no series for any model; nothing to do", skey)
            return
        existing = {s["description"] for s in series if s["modality"] == "SR"}
        for name, todo in plan.items():
            model = self.models[name]
            key = f"{skey}:{model.key}"
            t0 = time.perf_counter()
            outcomes, found = [], 0
            for s, heatmap_seg in todo:
                series_key = f"{skey}:{study_key(s['uid'])[:8]}:{model.key}"
                if self.state.is_done(series_key) or model.sr_description(s["uid"]) in existing:
                    found += 1  # this series' SR is already in Orthanc (or was stored before a restart)
                    continue
                outcome, kinds = self.process_series(model, study_uid, s, heatmap_seg, orthanc_id)
                self.state.mark_done(series_key, model=model.key, outcome=outcome)
                outcomes.append((outcome, kinds))
            self.state.mark_done(key, model=model.key, series=len(todo), found_in_pacs=found,
                                 outcomes=[o for o, _ in outcomes])
            if not outcomes:  # every series done before (a series added later to the study is read then)
                log.info("study %s: already processed by %s; skipped", skey, model.key)
                self.stats["skipped"] += 1
                continue
            self.stats["processed"] += 1
            log.info("study %s: %d series read by %s in %.1f s (%s); stored %s", skey, len(outcomes), model.key,
                     time.perf_counter() - t0, ", ".join(o for o, _ in outcomes),
                     ", ".join(sorted({k for _, kinds in outcomes for k in kinds})))

    def process_series(self, model: Model, study_uid: str, series: dict[str, Any], heatmap_seg: bool,
                       orthanc_id: str) -> tuple[str, list[str]]:
        """WADO-RS one series into a private temp dir, predict, STOW-RS SEG + PDF, then the SR (last: its presence
        marks the series done); the outcome ("finding" or "out of distribution") and the kinds stored."""
        import pydicom

        from meddx.io import read_image

        work = Path(tempfile.mkdtemp(prefix="series-", dir=self.work))  # mode 0700: the instances hold identifiers
        try:
            src = work / "series"
            src.mkdir()
            if not self.client.retrieve_series(study_uid, series["uid"], src):
                raise NetworkError("WADO-RS returned no instances")
            image = read_image(src)
            prediction = model.predictor.predict(image)
            paths = derived_objects(model, prediction, src, work / "out", heatmap_seg=heatmap_seg)
            others = [pydicom.dcmread(paths[k]) for k in ("seg", "pdf") if k in paths]
            if others:
                self.client.store(others)
            self.client.store([pydicom.dcmread(paths["sr"])])
            if self.results is not None:
                self._save_result(model, prediction, orthanc_id, series, paths)
            return ("finding" if in_distribution(prediction) else "out of distribution",
                    [k.upper() for k in ("seg", "pdf", "sr") if k in paths])
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _save_failure(self, orthanc_id: str, error: str) -> None:
        """List a study that failed in the viewer's worklist (status 'failed'), when there is a results store."""
        if self.results is None:
            return
        from meddx.app.results import save_status

        try:
            save_status(self.results, f"pacs-{orthanc_id[:17]}-failed", "failed", ",".join(self.models),
                        extra={"orthanc_study": orthanc_id, "source": "pacs", "error": error})
        except (OSError, ValueError) as exc:
            log.warning("results store: could not record the failure (%s)", _error_text(exc))

    def _save_result(self, model: Model, prediction: Any, orthanc_id: str, series: dict[str, Any],
                     paths: dict[str, Path]) -> None:
        """Add the study to the viewer's results store (no identifiers: keyed by Orthanc's own ids)."""
        from meddx.app.results import save_result
        from meddx.pacs.state import study_key as _key

        sid = f"pacs-{_key(series['uid'])}-{model.name[:20]}".replace("_", "-")
        extra = {"orthanc_study": orthanc_id, "source": "pacs", "modality": series.get("modality")}
        attachments = {n: paths[k] for n, k in (("report.pdf", "report_pdf"), ("report.html", "report_html"))
                       if k in paths and paths[k].is_file()}
        try:
            save_result(self.results, sid, prediction, model.name, extra=extra, model_version=model.version,
                        attachments=attachments)
        except (OSError, ValueError) as exc:  # the PACS has the result; the viewer's copy is a convenience
            log.warning("results store: could not save %s (%s)", sid, _error_text(exc))


def build_watcher(orthanc_url: str, models: Sequence[str | Path], routing: str | Path | None = None,
                  credentials: str | Path | None = None, state: str | Path | None = None,
                  results: str | Path | None = None, **options: Any) -> Watcher:
    """Load the RUNs once, read the routing and state, and connect to Orthanc."""
    from meddx.pacs.client import OrthancClient, load_credentials

    if not str(orthanc_url).startswith(("http://", "https://")):
        raise ConfigError(f"--orthanc must be an http(s) URL, not '{orthanc_url}'")
    if "@" in str(orthanc_url).split("//", 1)[1].split("/", 1)[0]:
        raise ConfigError("--orthanc must not hold a password: use --credentials")
    auth = load_credentials(credentials)  # fail fast, before the models load
    watch_state = WatchState(state)
    try:
        loaded: dict[str, Model] = {}
        for run in models:
            m = load_model(run)
            if m.name in loaded:
                raise ConfigError(f"two --model RUNs share the folder name '{m.name}'")
            loaded[m.name] = m
            log.info("model %s loaded (%s)", m.key, m.predictor.kind)
        rules = load_routing(routing, list(loaded))
    except BaseException:
        watch_state.close()
        raise
    return Watcher(OrthancClient(orthanc_url, auth), loaded, rules, watch_state, results=results, **options)


def watch(orthanc_url: str, models: Sequence[str | Path], routing: str | Path | None = None,
          credentials: str | Path | None = None, state: str | Path | None = None, once: bool = False,
          results: str | Path | None = None) -> dict[str, int]:
    """Run the watcher (Ctrl-C stops it after the change in progress is finished or abandoned)."""
    watcher = build_watcher(orthanc_url, models, routing=routing, credentials=credentials, state=state,
                            results=results)
    log.info("watching %s from change %d", orthanc_url.rstrip("/"), watcher.state.last_seq)
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM (service managers) stops like Ctrl-C

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return watcher.run(once=once)
    except KeyboardInterrupt:
        watcher.stop.set()
        log.info("stopped at change %d", watcher.state.last_seq)
        return dict(watcher.stats)
    finally:
        watcher.state.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
