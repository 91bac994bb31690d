"""meddx command line: parse, call one function, print, exit with a clear code.

Exit codes: 0 success, 2 bad input or options (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Sequence

from meddx import __version__
from meddx.train.config import SEG_LOSSES


TTA_HELP = ("segmentation: average the lesion probability over the input and its flips along each axis the "
            "model was trained to flip (--augment), at 2-3x the inference time")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meddx", description="Medical image diagnosis: read, train, evaluate, "
                                "localise and report (Keras 3 + TensorFlow).")
    p.add_argument("--version", action="version", version=f"meddx {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="whole pipeline on built-in synthetic lesion data (minutes on a CPU)")
    d.add_argument("--out", default="meddx-demo", help="output folder (default: meddx-demo)")
    d.add_argument("--data", help="run on this DATA instead of the built-in synthetic slices")
    d.add_argument("--n", type=int, default=1200, help="number of synthetic slices (default 1200)")
    d.add_argument("--minutes", type=float, default=3.0, help="training time budget in minutes (default 3)")
    d.add_argument("--epochs", type=int)
    d.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train a model on DATA into a RUN folder")
    t.add_argument("data", help="a MedMNIST-style .npz, a folder with one subfolder per class, or a CSV manifest")
    t.add_argument("--out", required=True, help="RUN folder to create (an interrupted run resumes)")
    t.add_argument("--model", help="registry name: cnn (default), resnet18, resnet50, densenet121, app_*, unet ...; "
                                   "sequence models lstm, gru, tcn, transformer, cnn25d for videos / cine / slice "
                                   "stacks (lstm is chosen when --model is left out and the data are sequences)")
    t.add_argument("--task", choices=["classification", "segmentation", "slice-labelling"],
                   help="slice-labelling: which slices of each stack hold the lesion (DATA: one folder of numbered "
                        "slices + *_mask files per patient, e.g. the LGG layout)")
    t.add_argument("--smoother", choices=["hmm", "crf"],
                   help="slice labelling: smooth the per-slice probabilities along the stack with a 2-state HMM "
                        "(default) or a linear-chain CRF")
    t.add_argument("--epochs", type=int, help="default: chosen from the data size")
    t.add_argument("--image-size", type=int, help="default: the data's size, capped by the model's default")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, dest="learning_rate")
    t.add_argument("--augment", choices=["none", "flip", "light", "strong"])
    t.add_argument("--intensity", help="minmax | zscore | zscore:nonzero[,channel] | zscore:foreground[,channel] "
                                       "(MR with noisy backgrounds) | scale255 | window:<preset>")
    t.add_argument("--select-channels", type=lambda v: [int(c) for c in v.split(",")], metavar="I[,J..]",
                   help="keep only these input channels (0-based), e.g. 1 for the FLAIR of a pre/FLAIR/post stack")
    t.add_argument("--seg-loss", choices=SEG_LOSSES,
                   help="segmentation loss: soft Dice per sample + cross-entropy (default); lesion_dice_bce: "
                        "the Dice term over lesion-containing samples only, so lesion-free slices are taught by "
                        "cross-entropy alone; batch_dice_bce: one Dice over the whole batch's pixels, so a false "
                        "alarm costs in proportion to its size; or Tversky (missed lesion weighs 0.7, false alarm "
                        "0.3) + cross-entropy")
    t.add_argument("--channel-dropout", type=float, metavar="P",
                   help="2D segmentation: zero one random input channel with probability P while training, so a "
                        "multi-sequence model does not lean on one sequence")
    t.add_argument("--lesion-fade", type=float, metavar="P",
                   help="2D segmentation: with probability P cut a training lesion's contrast to the tissue around "
                        "it by 0-90 %%, so the network also learns faint lesions")
    t.add_argument("--patch-size", type=int, dest="patch_size", metavar="N",
                   help="2D segmentation: train on random NxN crops of the --image-size images (half of the "
                        "lesion slices' crops centred on lesion) and predict whole images: full resolution for "
                        "small lesions at the training cost of N px")
    t.add_argument("--stack-min-fraction", type=float, dest="stack_min_fraction", metavar="F",
                   help="2D segmentation: stack each patient's slices (evaluate: grouped by patient ID, natural "
                        "name order; predict/report: a volume) and drop 3D lesion components smaller than F x that "
                        "patient's largest (e.g. 0.25): removes one-slice false alarms; stored in the RUN")
    t.add_argument("--frames", type=int, metavar="N", help="sequence models: frames sampled per study (default 16)")
    t.add_argument("--frame-sampling", choices=["uniform", "all"], dest="frame_sampling",
                   help="sequence models: N evenly spaced frames (uniform, default) or every frame (all)")
    t.add_argument("--max-minutes", type=float, help="stop training cleanly after this many minutes")
    t.add_argument("--config", help="JSON or TOML file of training settings (options given here override it)")
    t.add_argument("--seed", type=int)
    t.add_argument("--overwrite", action="store_true",
                   help="replace a finished RUN in --out, or start again an interrupted one begun with other settings")

    e = sub.add_parser("evaluate", help="metrics.json, ROC/PR/calibration/confusion plots on a split of DATA")
    e.add_argument("run")
    e.add_argument("data")
    e.add_argument("--split", default="test", help="train | val | test | all (default test)")
    e.add_argument("--out", required=True)
    e.add_argument("--report", action="store_true", help="also write an HTML evaluation report")
    e.add_argument("--tta", action="store_true", help=TTA_HELP)
    e.add_argument("--stack-min-fraction", type=float, dest="stack_min_fraction", metavar="F",
                   help="2D segmentation runs: stack post-processing with F instead of the RUN's own (0: off)")

    pr = sub.add_parser("predict", help="predictions.csv for images, volumes or DICOM series")
    pr.add_argument("run")
    pr.add_argument("inputs", nargs="+", metavar="INPUT")
    pr.add_argument("--out", required=True)
    pr.add_argument("--heatmaps", action="store_true", help="also write Grad-CAM heatmaps, overlays and lesions.csv")
    pr.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "occlusion"])
    pr.add_argument("--tta", action="store_true", help=TTA_HELP)

    r = sub.add_parser("report", help="report.html + report.pdf per study (+ DICOM SEG/SR for DICOM series)")
    r.add_argument("run")
    r.add_argument("inputs", nargs="+", metavar="INPUT")
    r.add_argument("--out", required=True)
    r.add_argument("--include-phi", action="store_true", help="show patient identifiers (off by default)")
    r.add_argument("--no-dicom", action="store_true", help="skip DICOM SEG/SR outputs")
    r.add_argument("--tta", action="store_true", help=TTA_HELP)

    i = sub.add_parser("info", help="what the reader sees: shape, spacing, orientation, modality, range")
    i.add_argument("input")
    i.add_argument("--series", help="SeriesInstanceUID to pick in a folder with several series")
    i.add_argument("--json", action="store_true")

    dl = sub.add_parser("download", help="download an official MedMNIST file (needs internet)")
    dl.add_argument("flag", help="e.g. breastmnist, pneumoniamnist, adrenalmnist3d")
    dl.add_argument("--root", help="folder (default ~/.meddx/medmnist or $MEDDX_DATA)")

    sub.add_parser("models", help="list the registered models")

    cmp_ = sub.add_parser("compare", help="train several models on the same split; AUC/CI/time table + ROC plot")
    cmp_.add_argument("data")
    cmp_.add_argument("--models", required=True, help="comma-separated, e.g. cnn,svm,logreg,dbn")
    cmp_.add_argument("--out", required=True)
    cmp_.add_argument("--epochs", type=int, help="CNN epochs (default: automatic)")
    cmp_.add_argument("--seed", type=int, default=0)
    return p


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "info":
        from meddx.io import read_image
        from meddx.io.info import format_info

        img = read_image(args.input, series_uid=args.series, allow_nan=True)
        if args.json:
            import json

            from meddx.utils import to_jsonable
            print(json.dumps(to_jsonable(img.summary()), indent=2))
        else:
            print(format_info(img))
        return 0
    if cmd == "models":
        from meddx.models.registry import list_models, model_spec

        for name in list_models():
            s = model_spec(name)
            dims = "/".join(f"{d}D" for d in s.dims)
            print(f"{name:<20} {dims:<6} {s.kind:<15} {s.description}")
        return 0
    if cmd == "download":
        from meddx.data.medmnist import download_medmnist

        print(download_medmnist(args.flag, args.root))
        return 0
    if cmd == "train":
        from meddx.train.config import TrainConfig

        cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        cfg = cfg.updated({k: getattr(args, k) for k in ("model", "task", "epochs", "batch_size", "learning_rate",
                                                         "augment", "intensity", "max_minutes", "seed",
                                                         "select_channels", "channel_dropout", "lesion_fade",
                                                         "seg_loss", "patch_size", "stack_min_fraction",
                                                         "frames", "frame_sampling", "smoother")},
                          source="command line")
        cfg = cfg.updated({"image_size": args.image_size})
        from meddx.app.common import choose_trainer

        fit, cfg = choose_trainer(args.data, cfg, args.model)
        fit(args.data, args.out, cfg, overwrite=args.overwrite)
        return 0
    if cmd == "evaluate":
        from meddx.app import evaluate_run

        evaluate_run(args.run, args.data, args.out, split=args.split, report=args.report, tta=args.tta,
                     stack_min_fraction=args.stack_min_fraction)
        return 0
    if cmd == "predict":
        from meddx.app import predict_inputs

        predict_inputs(args.run, args.inputs, args.out, heatmaps=args.heatmaps, method=args.method, tta=args.tta)
        return 0
    if cmd == "report":
        from meddx.app import report_studies

        report_studies(args.run, args.inputs, args.out, include_phi=args.include_phi, dicom=not args.no_dicom,
                       tta=args.tta)
        return 0
    if cmd == "demo":
        from meddx.app import run_demo

        run_demo(args.out, data=args.data, n=args.n, minutes=args.minutes, epochs=args.epochs, seed=args.seed)
        return 0
    if cmd == "compare":
        from meddx.app.compare import compare_models

        compare_models(args.data, args.models.split(","), args.out, seed=args.seed, epochs=args.epochs)
        return 0
    return 1


TF_COMMANDS = ("train", "evaluate", "predict", "report", "demo", "compare")


class _Levels(logging.Filter):
    """Pass records in [lo, hi) only."""

    def __init__(self, lo: int, hi: int) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi

    def filter(self, record: logging.LogRecord) -> bool:
        return self.lo <= record.levelno < self.hi


def _configure_logging() -> None:
    """The `meddx` logger prints progress to stdout and warnings to stderr ("meddx: warning: ..."); library code
    only logs. Idempotent, so repeated `main()` calls in one process do not double the lines."""
    logger = logging.getLogger("meddx")
    for h in [h for h in logger.handlers if getattr(h, "_meddx_cli", False)]:
        logger.removeHandler(h)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Levels(logging.INFO, logging.WARNING))
    out.setFormatter(logging.Formatter("%(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.addFilter(_Levels(logging.WARNING, logging.CRITICAL + 1))
    err.setFormatter(logging.Formatter("meddx: warning: %(message)s"))
    for h in (out, err):
        h._meddx_cli = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN notice, absl warning) kept off the terminal; the
    banner is replayed if the import fails, so nothing is hidden from a real error."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `meddx` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from meddx.errors import MeddxError

    _configure_logging()
    if args.command in TF_COMMANDS:
        _quiet_tensorflow_import()

    try:
        return _run(args)
    except MeddxError as exc:
        print(f"meddx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("meddx: interrupted (a training run resumes when started again with the same --out)", file=sys.stderr)
        return 130
    except MemoryError:
        print("meddx: error: out of memory (try a smaller --image-size or --batch-size)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
