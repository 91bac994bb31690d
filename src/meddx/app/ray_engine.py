"""`meddx predict --engine ray`: a prediction job on Ray Data, restartable shard by shard.

The job's studies are cut into shards of `SHARD_GROUPS` x `predict.BATCH` consecutive studies. A pool of Ray actors
(`map_batches` with a callable class) keeps the RUN loaded; each actor reads its shard's studies (any input kind)
and predicts them with the same `predict.study_rows` generator as `--engine local`, group for group, so the
probabilities are the same. Each shard is written atomically as DIR/shards/shard_NNNNNN.parquet; a re-run skips
shards already written, Ray retries the shards of a killed worker, and a study that fails becomes an error row.
The shards are then merged, in study order, into DIR/predictions.csv (+ lesions.csv), the text `--engine local`
writes. Without `--address` a local Ray with `num_cpus=2` is started quietly and shut down after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from meddx.app.common import CsvStream, Log, logger_or
from meddx.app.manifest import Study, chunks
from meddx.errors import ConfigError

LOGGER = logging.getLogger(__name__)
SHARD_GROUPS = 8  # predict.BATCH groups per shard: the unit of restart (256 studies by default)
LOCAL_CPUS = 2  # the local Ray started when no --address is given
SHARD_DIR = "shards"
JOB_FILE = "job.json"


def predict_studies_ray(run_dir: str | Path, studies: Sequence[Study], out: str | Path, heatmaps: bool = False,
                        method: str = "gradcam", tta: bool = False, address: str | None = None,
                        actors: int | None = None, log: Log | None = None, allow_ood: bool = False) -> Path:
    """predictions.csv for `studies` predicted on Ray (`address`: auto, ray://host:port, or None for a local
    Ray), with `actors` model replicas (default: one per CPU of the cluster, at most one per shard to do)."""
    from meddx.app import predict as local
    from meddx.infer.base import read_run_info

    log = logger_or(log)
    info, run_path = read_run_info(run_dir)
    if info.kind == "slice_labeller":
        raise ConfigError("slice-labelling RUNs predict with --engine local", run_path)
    out = Path(out)
    shard_dir = out / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    batch = local.BATCH
    shards = chunks(list(studies), max(1, SHARD_GROUPS) * batch)
    settings = {"run": str(Path(run_path).resolve()), "heatmaps": heatmaps, "method": method, "tta": tta,
                "allow_ood": allow_ood, "batch": batch, "shard_studies": len(shards[0]) if shards else 0,
                "studies": _digest(studies)}
    _check_job(shard_dir, settings)
    todo = [(k, shard) for k, shard in enumerate(shards) if not _shard_done(shard_path(shard_dir, k), len(shard))]
    log(f"{len(shards)} shard(s) of up to {settings['shard_studies']} studies: {len(shards) - len(todo)} already "
        f"done, {len(todo)} to predict on Ray")
    if todo:
        with ray_session(address) as cluster_cpus:
            n = max(1, min(actors or cluster_cpus, len(todo)))
            _run_shards(run_path, out, todo, n, batch=batch, heatmaps=heatmaps, method=method, tta=tta,
                        allow_ood=allow_ood, log=log)
    return merge_shards(out, len(shards), lesions=heatmaps or info.kind == "segmenter", log=log)


def predict_files_ray(run: str | Path, files: Sequence[str | Path], out: str | Path, actors: int = 1,
                      address: str | None = None, log: Log | None = None) -> Path:
    """predictions.csv for `files` (one study each) predicted on Ray with `actors` model replicas; for
    benchmarks (benchmarks/scale.py) and scripts."""
    studies = [Study(i, Path(f)) for i, f in enumerate(files)]
    return predict_studies_ray(run, studies, out, actors=actors, address=address, log=log or (lambda s: None))


def open_job_folder(out: str | Path, command: str, *identity: Any) -> Path:
    """`out` for a restartable job: refused (as `meddx.app.outputs` refuses) when it holds other outputs, else
    created and marked as this job's (RUN and inputs in `identity`), so a re-run may continue in it."""
    from meddx.app.outputs import MARKER, OutputError, check_out, describe_os_error, fingerprint

    key = fingerprint(command, *identity)
    out = check_out(out, key)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).is_file():
            (out / MARKER).write_text(json.dumps({"key": key, "command": "predict_inputs"}) + "\n",
                                      encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {describe_os_error(exc)}", out) from None
    return out


def shard_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / f"shard_{k:06d}.parquet"


def _digest(studies: Sequence[Study]) -> str:
    """A fingerprint of the job's study list (paths and names in order), so shards of another job are not reused."""
    h = hashlib.sha256()
    for s in studies:
        h.update(f"{s.index}\t{s.path}\t{s.study_id or ''}\n".encode())
    return h.hexdigest()


def _check_job(shard_dir: Path, settings: dict[str, Any]) -> None:
    """Record the job in DIR/shards/job.json; refuse to mix shards of a different job (other RUN, studies or
    options) into this one."""
    from meddx.utils import atomic_write_json

    job = shard_dir / JOB_FILE
    if job.is_file():
        try:
            before = json.loads(job.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if before != settings:
            raise ConfigError("holds shards of a different prediction job (other RUN, studies or options); "
                              "use another --out or delete it", shard_dir)
    elif any(shard_dir.glob("shard_*.parquet")):
        raise ConfigError("holds shards but no job.json; use another --out or delete it", shard_dir)
    else:
        atomic_write_json(job, settings)


def _shard_done(path: Path, n: int) -> bool:
    """True when the shard file exists, is readable Parquet and holds `n` rows."""
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows == n
    except Exception:  # noqa: BLE001 - an unreadable shard is predicted again
        return False


@contextmanager
def ray_session(address: str | None = None, num_cpus: int = LOCAL_CPUS) -> Iterator[int]:
    """A connected Ray (the cluster at `address`, or a local one with `num_cpus` started quietly: Ray's own logs
    stay off the terminal), shut down afterwards if started here; yields the cluster's CPU count."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'meddx[ray]'") from None
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the driver's C++ core worker writes to stderr
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                      configure_logging=True)
        if address:
            kwargs["address"] = address
        else:
            kwargs.update(num_cpus=num_cpus, object_store_memory=256 * 2**20)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start or reach Ray ({address or 'local'}): {exc}") from None
        started = True
        LOGGER.info("Ray: %s", f"connected to {address}" if address else f"local, {num_cpus} CPUs")
    _quiet_ray_data()
    try:
        yield max(1, int(ray.cluster_resources().get("CPU", 1)))
    finally:
        if started:
            ray.shutdown()


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or execution banners on the user's terminal."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for attr in ("print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)


class ShardPredictor:
    """A Ray Data callable class: loads the RUN once per actor, then predicts whole shards (a batch of shard
    descriptors) and writes each as Parquet."""

    def __init__(self, run_dir: str, out: str, batch: int, heatmaps: bool, method: str, tta: bool,
                 allow_ood: bool, threads: int = 1) -> None:
        from meddx.infer import load
        from meddx.models.runtime import configure_tensorflow

        configure_tensorflow(threads=threads, inter_op=1)  # one CPU per actor: no oversubscription
        self.predictor = load(run_dir, tta=tta)
        self.out = Path(out)
        self.batch, self.heatmaps, self.method, self.allow_ood = batch, heatmaps, method, allow_ood

    def __call__(self, items: dict[str, Any]) -> dict[str, Any]:
        done: dict[str, list[Any]] = {"shard": [], "studies": [], "errors": []}
        for k, spec in zip(items["shard"], items["studies"]):
            studies = [Study(int(i), Path(p), sid or None) for i, p, sid in json.loads(spec)]
            errors = write_shard(self.predictor, studies, shard_path(self.out / SHARD_DIR, int(k)), self.out,
                                 batch=self.batch, heatmaps=self.heatmaps, method=self.method,
                                 allow_ood=self.allow_ood)
            done["shard"].append(int(k))
            done["studies"].append(len(studies))
            done["errors"].append(errors)
        return done


def write_shard(predictor: Any, studies: Sequence[Study], path: Path, out: Path, batch: int, heatmaps: bool = False,
                method: str = "gradcam", allow_ood: bool = False) -> int:
    """Predict one shard's studies (errors become rows) and write them atomically as Parquet: typed `index`,
    `input`, `predicted`, `probability`, `error` columns plus each row's exact predictions.csv cells (`row`, JSON)
    and lesions.csv rows (`lesions`). Returns the number of failed studies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meddx.app.predict import study_rows
    from meddx.utils import atomic_path

    cols: dict[str, list[Any]] = {k: [] for k in ("index", "input", "predicted", "probability", "error", "row",
                                                  "lesions")}
    for study, row, les in study_rows(predictor, studies, out, heatmaps=heatmaps, method=method, errors="row",
                                      batch=batch, allow_ood=allow_ood):
        p = row.get("probability")
        cols["index"].append(study.index)
        cols["input"].append(str(row.get("input", "")))
        cols["predicted"].append(str(row.get("predicted", "")))
        cols["probability"].append(float(p) if isinstance(p, (int, float)) else None)
        cols["error"].append(row.get("error"))
        cols["row"].append(json.dumps(csv_cells(row)))
        cols["lesions"].append(json.dumps([csv_cells(r) for r in les]))
    schema = pa.schema([("index", pa.int64()), ("input", pa.string()), ("predicted", pa.string()),
                        ("probability", pa.float64()), ("error", pa.string()), ("row", pa.string()),
                        ("lesions", pa.string())])
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(cols, schema=schema), tmp)
    return sum(e is not None for e in cols["error"])


def _as_given(cells: dict[str, str], out: Path) -> dict[str, str]:
    """Output paths the actors wrote (under the resolved DIR) as DIR was given, as --engine local writes them."""
    actual = str(out.resolve())
    if actual == str(out):
        return cells
    return {k: str(out) + v[len(actual):] if v.startswith(actual + os.sep) else v for k, v in cells.items()}


def csv_cells(row: dict[str, Any]) -> dict[str, str]:
    """A row as the exact cell texts the csv module writes for it (None -> "", else str())."""
    return {k: "" if v is None else (v if isinstance(v, str) else str(v)) for k, v in row.items()}


def _run_shards(run_path: Path, out: Path, todo: list[tuple[int, list[Study]]], actors: int, batch: int,
                heatmaps: bool, method: str, tta: bool, allow_ood: bool, log: Log) -> None:
    """Predict the shards still to do on a pool of `actors` Ray actors, logging each shard as it completes."""
    import ray.data

    items = [{"shard": k, "studies": json.dumps([[s.index, str(s.path), s.study_id or ""] for s in shard])}
             for k, shard in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(ShardPredictor, batch_size=1, concurrency=actors, num_cpus=1,
                        fn_constructor_kwargs=dict(run_dir=str(Path(run_path).resolve()), out=str(out.resolve()),
                                                   batch=batch, heatmaps=heatmaps, method=method, tta=tta,
                                                   allow_ood=allow_ood))
    n_done = 0
    for r in ds.iter_rows():
        n_done += 1
        log(f"shard {int(r['shard']) + 1}: {int(r['studies'])} studies"
            + (f", {int(r['errors'])} failed" if int(r["errors"]) else "") + f" ({n_done}/{len(todo)})")


def merge_shards(out: Path, n_shards: int, lesions: bool = False, log: Log | None = None) -> Path:
    """DIR/predictions.csv (+ lesions.csv) from the shards in study order; one line per failed study."""
    import pyarrow.parquet as pq

    from meddx.app.predict import LESION_HEADER, describe_row

    log = logger_or(log)
    failed = 0
    with ExitStack() as stack:
        rows = stack.enter_context(CsvStream(out / "predictions.csv"))
        lesion_rows = stack.enter_context(CsvStream(out / "lesions.csv", empty_header=LESION_HEADER)) \
            if lesions else None
        for k in range(n_shards):
            d = pq.read_table(shard_path(out / SHARD_DIR, k), columns=["index", "row", "lesions"]).to_pydict()
            for _, row, les in sorted(zip(d["index"], d["row"], d["lesions"]), key=lambda t: t[0]):
                cells = _as_given(json.loads(row), out)
                rows.write(cells)
                if cells.get("error"):
                    failed += 1
                    log(describe_row(cells))
                for r in json.loads(les) if lesion_rows is not None else []:
                    lesion_rows.write(_as_given(r, out))
    log(f"wrote {out / 'predictions.csv'} ({rows.count} studies" + (f", {failed} failed" if failed else "") + ")")
    return out / "predictions.csv"
