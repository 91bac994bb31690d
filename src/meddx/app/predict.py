"""`meddx predict`: predictions.csv for every input (+ heatmaps/masks, overlays and lesions.csv), through the
in-memory predictors of `meddx.infer`.

Studies stream through in bounded memory: a few reader threads read ahead of the model (at most `READ_AHEAD`
studies or `READ_BUDGET` bytes), the single images of each run of `BATCH` consecutive studies are predicted (and
their heatmaps computed) together, volumes and sequences one at a time as they arrive, and rows are written as they
come. The same `study_rows` generator serves `--engine ray` (`meddx.app.ray_engine`), group for group, so both
engines give the same probabilities."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from meddx.app.common import CsvStream, Log, expand_inputs, logger_or, pseudonymised, read_input, safe_stem
from meddx.app.manifest import Study, collect_studies
from meddx.app.outputs import writes_output_folder
from meddx.errors import ConfigError, MeddxError, naming
from meddx.utils import atomic_path

LOGGER = logging.getLogger(__name__)
BATCH = 32  # consecutive studies whose single images are predicted together (the same groups on every engine)
READERS = 2  # reader threads
READ_AHEAD = 64  # studies read ahead of the model at most ...
READ_BUDGET = 512 * 2**20  # ... and about this many bytes of read images (a few CT volumes)
LESION_HEADER = ["input", "id"]


def predict_inputs(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, heatmaps: bool = False,
                   method: str = "gradcam", tta: bool = False, log: Log | None = None, manifest: str | None = None,
                   engine: str = "local", address: str | None = None, runtime: str = "keras",
                   allow_ood: bool = False, include_phi: bool = False, coverage: float = 0.9) -> Path:
    """predictions.csv for every input and manifest row (+ heatmap .npy, overlay PNG and lesions.csv with
    --heatmaps; `tta`: flip test-time augmentation, segmentation runs); `engine` "ray" runs the job on Ray
    (`address`: a cluster, default a local Ray). Local outputs appear as a whole (`writes_output_folder`); a Ray
    job writes into `out` directly, since its shards must outlive a failed run to be skipped by the next."""
    args = dict(run_dir=run_dir, inputs=inputs, out=out, heatmaps=heatmaps, method=method, tta=tta, log=log,
                manifest=manifest, engine=engine, address=address, runtime=runtime, allow_ood=allow_ood,
                include_phi=include_phi, coverage=coverage)
    if engine == "ray":
        from meddx.app.ray_engine import open_job_folder

        args["out"] = open_job_folder(out, "predict", run_dir, inputs, manifest)
        return _predict(**args)
    return _predict_staged(**args)


def _predict(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, heatmaps: bool = False,
             method: str = "gradcam", tta: bool = False, log: Log | None = None, manifest: str | None = None,
             engine: str = "local", address: str | None = None, runtime: str = "keras",
             allow_ood: bool = False, include_phi: bool = False, coverage: float = 0.9) -> Path:
    """`predict_inputs` writing into `out` as it goes."""
    from meddx.infer import load
    from meddx.infer.base import read_run_info

    log = logger_or(log)
    if runtime != "keras" and heatmaps:  # exported models (meddx.infer.runtimes) give probabilities only
        raise ConfigError(f"--heatmaps needs --runtime keras (Grad-CAM uses the Keras model's gradients); "
                          f"--runtime {runtime} gives probabilities only")
    if runtime != "keras" and engine != "local":
        raise ConfigError(f"--runtime {runtime} runs with --engine local only")
    if not inputs and manifest is None:
        raise ConfigError("give at least one INPUT (or --manifest STUDIES.csv)")
    info, _ = read_run_info(run_dir)
    sequences = info.kind == "sequence_classifier"
    if info.kind == "slice_labeller":  # each INPUT is one stack (a folder of slices is not expanded)
        if engine != "local" or manifest is not None:
            raise ConfigError("slice-labelling RUNs predict with --engine local and INPUT arguments only")
        from meddx.app.slice_labelling import predict_stacks

        return predict_stacks(load(run_dir), inputs, out, log=log)
    studies = collect_studies(expand_inputs(inputs, sequences=sequences) if inputs else [], manifest)
    studies = pseudonymised(studies, include_phi)  # study_001 ... in outputs unless --include-phi
    if engine == "ray":
        from meddx.app.ray_engine import predict_studies_ray

        return predict_studies_ray(run_dir, studies, out, heatmaps=heatmaps, method=method, tta=tta,
                                   address=address, log=log, allow_ood=allow_ood)
    if engine != "local":
        raise ConfigError(f"unknown --engine {engine!r} (local or ray)")
    predictor = load(run_dir, tta=tta, runtime=runtime)
    if hasattr(predictor, "set_coverage"):  # conformal prediction sets at this target coverage
        predictor.set_coverage(coverage)
    if predictor.kind == "segmenter":
        return predict_segmentations(predictor, studies, out, log=log)
    return predict_classifications(predictor, studies, out, heatmaps=heatmaps, method=method, log=log,
                                   allow_ood=allow_ood)


_predict_staged = writes_output_folder("predict", "run_dir", "inputs", "manifest")(_predict)


def predict_classifications(predictor: Any, studies: Sequence[Study | Path], out: str | Path,
                            heatmaps: bool = False, method: str = "gradcam", log: Log | None = None,
                            allow_ood: bool = False) -> Path:
    """predictions.csv (+ heatmaps/ with .npy, overlay PNG, and lesions.csv) for a classifier; an input outside the
    RUN's training distribution gets `out of distribution: <reason>` and no probabilities unless `allow_ood`."""
    return write_predictions(predictor, studies, out, heatmaps=heatmaps, method=method, log=log,
                             allow_ood=allow_ood)


def predict_segmentations(predictor: Any, studies: Sequence[Study | Path], out: str | Path,
                          log: Log | None = None) -> Path:
    """predictions.csv (+ masks/<stem>_mask.npy, overlay PNG, lesions.csv) for a segmenter."""
    return write_predictions(predictor, studies, out, log=log)


def write_predictions(predictor: Any, studies: Sequence[Study | Path], out: str | Path, heatmaps: bool = False,
                      method: str = "gradcam", log: Log | None = None, allow_ood: bool = False) -> Path:
    """predictions.csv and (segmenters, or --heatmaps) lesions.csv, rows written as the studies are predicted; a
    study that cannot be read or predicted stops the job with its file named, leaving no predictions.csv."""
    from tqdm.auto import tqdm

    log = logger_or(log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    studies = [s if isinstance(s, Study) else Study(i, Path(s)) for i, s in enumerate(studies)]
    lesions = heatmaps or predictor.kind == "segmenter"
    bar = tqdm(total=len(studies), desc="predicting", unit="study", leave=False,
               disable=len(studies) < 10 or not _tty())
    lesion_csv = CsvStream(out / "lesions.csv", empty_header=LESION_HEADER) if lesions else nullcontext()
    with CsvStream(out / "predictions.csv") as rows, lesion_csv as lesion_rows:
        for _, row, les in study_rows(predictor, studies, out, heatmaps=heatmaps, method=method,
                                      allow_ood=allow_ood):
            rows.write(row)
            for r in les:
                lesion_rows.write(r)
            log(describe_row(row))
            bar.update(1)
    bar.close()
    extra = ", masks in " + str(out / "masks") if predictor.kind == "segmenter" else \
        (f", heatmaps in {out / 'heatmaps'}" if heatmaps else "")
    log(f"wrote {out / 'predictions.csv'}{extra}")
    return out / "predictions.csv"


def describe_row(row: dict[str, Any]) -> str:
    """The progress line of one study."""
    if row.get("error"):
        return f"{row['input']}: error: {row['error']}"
    if "n_lesions" in row:
        return f"{row['input']}: {row['n_lesions']} lesion(s), {row['n_voxels']} voxels"
    p = row.get("probability", "")
    return f"{row['input']}: {row['predicted']}" + (f" (p={p:.3f})" if p != "" else "")


# -- the study stream shared by both engines ----------------------------------------------------------------

def study_rows(predictor: Any, studies: Sequence[Study], out: Path, heatmaps: bool = False,
               method: str = "gradcam", errors: str = "raise", batch: int | None = None,
               allow_ood: bool = False) -> Iterator[tuple[Study, dict[str, Any], list[dict[str, Any]]]]:
    """(study, predictions.csv row, lesions.csv rows) per study, in study order. Single images of each run of
    `batch` studies with consecutive indices (index // batch) are predicted together; `errors` "row": a study
    that fails gives a row with an `error` column instead of stopping the job; `allow_ood`: diagnoses of
    out-of-distribution inputs are given, not withheld."""
    job = _Job(predictor, Path(out), heatmaps, method, errors, allow_ood)
    batch = batch or BATCH
    group: list[tuple[Study, Any]] = []  # single images waiting for their group's batch
    ready: dict[int, tuple[Study, dict[str, Any], list[dict[str, Any]]]] = {}
    order: list[Study] = []
    for study, image, error in read_ahead(studies, sequences=predictor.kind == "sequence_classifier"):
        if order and order[0].index // batch != study.index // batch:
            yield from job.finish_group(order, group, ready)
        order.append(study)
        if error is not None:
            ready[study.index] = job.failed(study, error)
        elif _batchable(predictor, image):
            group.append((study, image))
        else:  # a volume, sequence or segmentation: predicted now, so only small images wait in memory
            ready[study.index] = job.one(study, image)
    if order:
        yield from job.finish_group(order, group, ready)


@dataclass
class _Job:
    """What `study_rows` predicts with, and how it turns predictions (or failures) into rows."""

    predictor: Any
    out: Path
    heatmaps: bool
    method: str
    errors: str
    allow_ood: bool

    def finish_group(self, order: list[Study], group: list[tuple[Study, Any]], ready: dict[int, Any]) -> Iterator[Any]:
        """Predict the group's waiting single images together, then yield the group's rows in study order."""
        if group:
            try:
                preds = self.predictor.predict_batch([img for _, img in group], heatmap=self.heatmaps,
                                                     method=self.method)
            except MeddxError:  # one at a time, so the error (if any) names its study
                preds = None
            for k, (study, image) in enumerate(group):
                ready[study.index] = self.one(study, image) if preds is None else self.rows(study, preds[k])
        for study in order:
            yield ready.pop(study.index)
        order.clear()
        group.clear()

    def one(self, study: Study, image: Any) -> Any:
        """One study predicted on its own."""
        try:
            with naming(study.path):
                pred = self.predictor.predict(image) if self.predictor.kind == "segmenter" else \
                    self.predictor.predict(image, heatmap=self.heatmaps, method=self.method)
        except Exception as exc:  # noqa: BLE001 - errors="row" keeps every failure in the table
            return self.failed(study, exc)
        return self.rows(study, pred)

    def rows(self, study: Study, pred: Any) -> Any:
        try:
            with naming(study.path):
                if self.predictor.kind == "segmenter":
                    return (study, *segmenter_rows(study, pred, self.out))
                return (study, *classifier_rows(self.predictor, study, pred, self.out, self.heatmaps,
                                                allow_ood=self.allow_ood))
        except Exception as exc:  # noqa: BLE001
            return self.failed(study, exc)

    def failed(self, study: Study, exc: BaseException) -> tuple[Study, dict[str, Any], list[dict[str, Any]]]:
        """An error row (errors="row"), else the error re-raised naming the study's file."""
        if self.errors != "row":
            raise exc
        message = " ".join(str(exc).split()) if isinstance(exc, MeddxError) else f"{type(exc).__name__}: {exc}"
        own = f"{study.path}: "
        if message.startswith(own):  # the row already names the study
            message = message[len(own):]
        return study, {"input": study.name, "predicted": "", "error": message}, []


def _batchable(predictor: Any, image: Any) -> bool:
    """True for a single 2D image a classifier predicts in a batch with others."""
    if predictor.kind != "classifier":
        return False
    try:
        return not predictor._is_stack(image)
    except MeddxError:
        return False  # predicted alone, so the error names its file


def _stem(study: Study) -> str:
    """The file-name stem of a study's outputs (heatmaps, masks): its 1-based number and a safe name."""
    return f"{study.index + 1:03d}_{safe_stem(Path(study.name))}"


def classifier_rows(predictor: Any, study: Study, pred: Any, out: Path, heatmaps: bool,
                    allow_ood: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A classifier's predictions.csv row for one study (+ its heatmap files and lesions.csv rows); an input
    outside the RUN's training distribution gets `out of distribution: <reason>` and no probabilities unless
    `allow_ood`."""
    from meddx.infer.ood import gate_columns

    row: dict[str, Any] = {"input": study.name, "predicted": pred.label, "probability": round(pred.probability, 6)}
    row.update({f"p_{c}": round(v, 6) for c, v in pred.probabilities.items()})
    row["threshold"] = predictor.threshold
    row["n_slices"] = len(pred.slice_scores) if pred.slice_scores else 1
    row["key_slices"] = " ".join(map(str, pred.key_slices or []))
    gate = gate_columns(pred, allow_ood)
    if gate.pop("withheld", False):
        row.update({k: "" for k in row if k == "probability" or k.startswith("p_")})
    row.update(gate)
    lesion_rows: list[dict[str, Any]] = []
    if heatmaps and pred.heatmap is not None:
        from meddx.explain import lesions_table, save_overlay, save_volume_overlay

        hdir = out / "heatmaps"
        hdir.mkdir(exist_ok=True)
        stem = _stem(study)
        with atomic_path(hdir / f"{stem}_heatmap.npy") as tmp:
            np.save(tmp, pred.heatmap)
        title = f"{pred.label} ({pred.probability:.2f})"
        save = save_volume_overlay if pred.heatmap.ndim == 3 else save_overlay
        extra = {"spacing": pred.spacing} if pred.heatmap.ndim == 3 else {}
        save(pred.display, pred.heatmap, hdir / f"{stem}_overlay.png", lesions=pred.lesions, title=title, **extra)
        row["overlay"] = str(hdir / f"{stem}_overlay.png")
        lesion_rows = [{"input": study.name, **les} for les in lesions_table(pred.lesions)]
    return row, lesion_rows


def segmenter_rows(study: Study, pred: Any, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A segmenter's predictions.csv row (+ mask .npy and overlay PNG written) and lesions.csv rows."""
    from meddx.evaluate.segmentation_panel import save_segmentation_panel

    (out / "masks").mkdir(parents=True, exist_ok=True)
    d = pred.details
    stem = _stem(study)
    mask_file = out / "masks" / f"{stem}_mask.npy"
    with atomic_path(mask_file) as tmp:
        np.save(tmp, pred.mask.astype(np.uint8))
    png = out / "masks" / f"{stem}_overlay.png"
    save_segmentation_panel([(pred.display, None, pred.mask, Path(study.name).name)], png)
    row = {"input": study.name, "predicted": "lesion" if d["n_lesions"] else "normal",
           "n_lesions": d["n_lesions"], "n_voxels": d["n_voxels"], "volume_ml": d["volume_ml"],
           "units": d["units"], "mask": str(mask_file), "overlay": str(png)}
    lesion_rows = [{"input": study.name, **{k: v for k, v in les.items() if k != "mask"}} for les in pred.lesions]
    return row, lesion_rows


# -- bounded read-ahead -------------------------------------------------------------------------------------

def read_study(study: Study, sequences: bool = False) -> Any:
    """One study read as the RUN reads it; an error names its file."""
    with naming(study.path):
        if not study.path.exists():
            from meddx.errors import InputError

            raise InputError("no such file or folder", study.path)
        return read_input(study.path, sequences)


def read_ahead(studies: Sequence[Study], sequences: bool = False, workers: int | None = None,
               ahead: int | None = None, budget: int | None = None) -> Iterator[tuple[Study, Any, Any]]:
    """(study, image or None, error or None) in study order, read by `workers` threads at most `ahead` studies
    (and about `budget` bytes, judged by the largest image so far) ahead of the consumer."""
    from concurrent.futures import Future, ThreadPoolExecutor

    workers = READERS if workers is None else workers
    ahead, budget = ahead or READ_AHEAD, budget or READ_BUDGET
    pending: deque[tuple[Study, Future[Any]]] = deque()
    largest = 1
    it = iter(studies)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="meddx-read") as pool:
        try:
            while True:
                window = max(workers, min(ahead, budget // largest))
                while len(pending) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    pending.append((nxt, pool.submit(read_study, nxt, sequences)))
                if not pending:
                    return
                study, fut = pending.popleft()
                try:
                    image = fut.result()
                except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises or records it
                    yield study, None, exc
                    continue
                nbytes = getattr(image, "nbytes", None) or getattr(getattr(image, "array", None), "nbytes", 0)
                largest = max(largest, int(nbytes or 0))  # VideoStudy.nbytes: an estimate, no decode
                yield study, image, None
        finally:
            for _, fut in pending:
                fut.cancel()


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()
