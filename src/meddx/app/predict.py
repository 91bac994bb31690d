"""`meddx predict`: predictions.csv for every input (+ heatmaps/masks, overlays and lesions.csv), through the
in-memory predictors of `meddx.infer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from meddx.app.common import Log, expand_inputs, logger_or, read_input, reads_sequences, safe_stem, write_csv
from meddx.errors import ConfigError, MeddxError, naming
from meddx.utils import atomic_path

BATCH = 32  # single images read and predicted together


def predict_inputs(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, heatmaps: bool = False,
                   method: str = "gradcam", tta: bool = False, log: Log | None = None, manifest: str | None = None,
                   engine: str = "local", address: str | None = None, runtime: str = "keras",
                   allow_ood: bool = False, include_phi: bool = False, coverage: float = 0.9) -> Path:
    """predictions.csv for every input (+ heatmap .npy, overlay PNG and lesions.csv with --heatmaps; `tta`:
    flip test-time augmentation, segmentation runs)."""
    from meddx.infer import load

    log = logger_or(log)
    if manifest is not None or engine != "local" or runtime != "keras":
        raise ConfigError("--manifest, --engine ray and --runtime are not available in this build yet")
    if not inputs:
        raise ConfigError("give at least one INPUT (or --manifest STUDIES.csv)")
    predictor = load(run_dir, tta=tta)
    if hasattr(predictor, "set_coverage"):  # conformal prediction sets at this target coverage
        predictor.set_coverage(coverage)
    if predictor.kind == "slice_labeller":  # each INPUT is one stack (a folder of slices is not expanded)
        from meddx.app.slice_labelling import predict_stacks

        return predict_stacks(predictor, inputs, out, log=log)
    files = expand_inputs(inputs, sequences=reads_sequences(predictor))
    if predictor.kind == "segmenter":
        return predict_segmentations(predictor, files, out, log=log)
    return predict_classifications(predictor, files, out, heatmaps=heatmaps, method=method, log=log,
                                   allow_ood=allow_ood)


def _read_in_batches(files: Sequence[Path], size: int, sequences: bool = False) -> Iterator[list[tuple[Path, Any]]]:
    """(file, Image) pairs, `size` at a time, read by `read_input` (`sequences`: a sequence RUN's studies); a reading
    error names its file."""
    for start in range(0, len(files), size):
        batch = []
        for f in files[start: start + size]:
            with naming(f):
                batch.append((f, read_input(f, sequences)))
        yield batch


def predict_classifications(predictor: Any, files: Sequence[Path], out: str | Path, heatmaps: bool = False,
                            method: str = "gradcam", log: Log | None = None, allow_ood: bool = False) -> Path:
    """predictions.csv (+ heatmaps/ with .npy, overlay PNG, and lesions.csv) for a classifier; an input outside the
    RUN's training distribution gets `out of distribution: <reason>` and no probabilities unless `allow_ood`."""
    from meddx.infer.ood import gate_columns

    from tqdm.auto import tqdm

    from meddx.explain import lesions_table, save_overlay, save_volume_overlay

    log = logger_or(log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, lesion_rows = [], []
    bar = tqdm(total=len(files), desc="predicting", unit="study", leave=False,
               disable=len(files) < 10 or not _tty())
    i = 0
    for batch in _read_in_batches(files, BATCH, reads_sequences(predictor)):
        for (f, _), pred in zip(batch, _predict_batch(predictor, batch, heatmaps, method)):
            i += 1
            stem = f"{i:03d}_{safe_stem(f)}"
            row: dict[str, Any] = {"input": str(f), "predicted": pred.label, "probability": round(pred.probability, 6)}
            row.update({f"p_{c}": round(v, 6) for c, v in pred.probabilities.items()})
            row["threshold"] = predictor.threshold
            row["n_slices"] = len(pred.slice_scores) if pred.slice_scores else 1
            row["key_slices"] = " ".join(map(str, pred.key_slices or []))
            gate = gate_columns(pred, allow_ood)
            if gate.pop("withheld", False):
                row.update({k: "" for k in row if k == "probability" or k.startswith("p_")})
            row.update(gate)
            if heatmaps and pred.heatmap is not None:
                hdir = out / "heatmaps"
                hdir.mkdir(exist_ok=True)
                np.save(hdir / f"{stem}_heatmap.npy", pred.heatmap)
                title = f"{pred.label} ({pred.probability:.2f})"
                save = save_volume_overlay if pred.heatmap.ndim == 3 else save_overlay
                extra = {"spacing": pred.spacing} if pred.heatmap.ndim == 3 else {}
                save(pred.display, pred.heatmap, hdir / f"{stem}_overlay.png", lesions=pred.lesions, title=title,
                     **extra)
                row["overlay"] = str(hdir / f"{stem}_overlay.png")
                for les in lesions_table(pred.lesions):
                    lesion_rows.append({"input": str(f), **les})
            rows.append(row)
            log(f"{f}: {row['predicted']}" + (f" (p={row['probability']:.3f})" if row["probability"] != "" else ""))
            bar.update(1)
    bar.close()
    write_csv(out / "predictions.csv", rows)
    if heatmaps:
        write_csv(out / "lesions.csv", lesion_rows, empty_header=["input", "id"])
    log(f"wrote {out / 'predictions.csv'}" + (f", heatmaps in {out / 'heatmaps'}" if heatmaps else ""))
    return out / "predictions.csv"


def _predict_batch(predictor: Any, batch: list[tuple[Path, Any]], heatmaps: bool, method: str) -> list[Any]:
    """Predictions for one batch; an error raised on one input names that input's file."""
    try:
        return predictor.predict_batch([img for _, img in batch], heatmap=heatmaps, method=method)
    except MeddxError:
        pass  # fall back to one at a time, so the error (if any) names its file
    preds = []
    for f, img in batch:
        with naming(f):
            preds.append(predictor.predict(img, heatmap=heatmaps, method=method))
    return preds


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()


def predict_segmentations(predictor: Any, files: Sequence[Path], out: str | Path, log: Log | None = None) -> Path:
    """predictions.csv (+ masks/<stem>_mask.npy, overlay PNG, lesions.csv) for a segmenter."""
    from meddx.evaluate.segmentation_panel import save_segmentation_panel
    from meddx.io import read_image

    log = logger_or(log)
    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows, lesion_rows = [], []
    for i, f in enumerate(files):
        with naming(f):
            pred = predictor.predict(read_image(f))
        d = pred.details
        stem = f"{i + 1:03d}_{safe_stem(Path(f))}"
        mask_file = out / "masks" / f"{stem}_mask.npy"
        with atomic_path(mask_file) as tmp:
            np.save(tmp, pred.mask.astype(np.uint8))
        png = out / "masks" / f"{stem}_overlay.png"
        save_segmentation_panel([(pred.display, None, pred.mask, Path(str(f)).name)], png)
        rows.append({"input": str(f), "predicted": "lesion" if d["n_lesions"] else "normal",
                     "n_lesions": d["n_lesions"], "n_voxels": d["n_voxels"], "volume_ml": d["volume_ml"],
                     "units": d["units"], "mask": str(mask_file), "overlay": str(png)})
        for les in pred.lesions:
            lesion_rows.append({"input": str(f), **{k: v for k, v in les.items() if k != "mask"}})
        log(f"{f}: {d['n_lesions']} lesion(s), {d['n_voxels']} voxels")
    write_csv(out / "predictions.csv", rows)
    write_csv(out / "lesions.csv", lesion_rows, empty_header=["input", "id"])
    log(f"wrote {out / 'predictions.csv'}")
    return out / "predictions.csv"
