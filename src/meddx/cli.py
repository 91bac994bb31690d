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


OUT_HELP = ("output folder: new or empty (a folder holding other outputs is refused, so studies and runs never mix; "
            "re-running the same command on the same RUN and inputs replaces its own outputs); written in a hidden "
            "sibling folder and renamed into place only when every file is done")
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
    t.add_argument("--image-size", type=int, help="default: the data's size, capped by the model's default (2D "
                                                  "segmentation of slice stacks: 256)")
    t.add_argument("--batch-size", type=int, help="default 64 (2D segmentation of slice stacks: 8)")
    t.add_argument("--lr", type=float, dest="learning_rate", help="default 0.002 (2D segmentation of slice "
                                                                   "stacks: 0.003)")
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
                        "it by 0-90 %%, so the network also learns faint lesions (default 0.5 for slice stacks, "
                        "else 0)")
    t.add_argument("--patch-size", type=int, dest="patch_size", metavar="N",
                   help="2D segmentation: train on random NxN crops of the --image-size images (half of the "
                        "lesion slices' crops centred on lesion) and predict whole images: full resolution for "
                        "small lesions at the training cost of N px; 0 = whole images (default: 128 for slice "
                        "stacks of >= 256 px, else whole images)")
    t.add_argument("--stack-min-fraction", type=float, dest="stack_min_fraction", metavar="F",
                   help="2D segmentation: stack each patient's slices (evaluate: grouped by patient ID, natural "
                        "name order; predict/report: a volume) and drop 3D lesion components smaller than F x that "
                        "patient's largest (e.g. 0.25): removes one-slice false alarms; stored in the RUN "
                        "(default 0.25 for slice stacks, else 0)")
    t.add_argument("--frames", type=int, metavar="N", help="sequence models: frames sampled per study (default 16)")
    t.add_argument("--frame-sampling", choices=["uniform", "all"], dest="frame_sampling",
                   help="sequence models: N evenly spaced frames (uniform, default) or every frame (all)")
    t.add_argument("--max-minutes", type=float, help="stop training cleanly after this many minutes")
    t.add_argument("--config", help="JSON or TOML file of training settings (options given here override it)")
    t.add_argument("--seed", type=int)
    t.add_argument("--devices", help="data-parallel training over N devices (GPUs, else N logical CPU devices) or "
                                     "'all' (tf.distribute.MirroredStrategy; default: one device)")
    t.add_argument("--folds", type=int, metavar="K", help="K-fold cross-validation, folds grouped by patient")
    t.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="run cross-validation folds here one after another (local) or as parallel Ray tasks")
    t.add_argument("--class-weights", action=argparse.BooleanOptionalAction, dest="class_weights",
                   help="weight cases so every class counts equally (default: off for image classifiers, whose "
                        "argmax accuracy it lowered in cross-validation; on for sequence classifiers); turn on for "
                        "a rare class that must not be missed, or for sharper Grad-CAM localisation (the demo does)")
    t.add_argument("--members", type=int, metavar="K",
                   help="image classifiers: train an ensemble of K copies of the model side by side, each on its "
                        "own loss, and predict their mean probability (default: 3 for MedMNIST-sized data, "
                        "every side <= 32 px and >= 200 training cases; else 1)")
    t.add_argument("--allow-rare-classes", action="store_true", dest="allow_rare_classes",
                   help="train even when a class has too few cases to learn or validate")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a finished RUN in --out, or start again an interrupted one begun with other settings")

    e = sub.add_parser("evaluate", help="metrics.json, ROC/PR/calibration/confusion plots on a split of DATA")
    e.add_argument("run")
    e.add_argument("data")
    e.add_argument("--split", default="test", help="train | val | test | all (default test)")
    e.add_argument("--out", required=True, help=OUT_HELP)
    e.add_argument("--report", action="store_true", help="also write an HTML evaluation report")
    e.add_argument("--coverage", type=float, default=0.9,
                   help="target coverage of the conformal prediction sets (default 0.9: the set holds the true class for 90 %% of cases like the validation ones)")
    e.add_argument("--tta", action="store_true", help=TTA_HELP)
    e.add_argument("--stack-min-fraction", type=float, dest="stack_min_fraction", metavar="F",
                   help="2D segmentation runs: stack post-processing with F instead of the RUN's own (0: off)")

    pr = sub.add_parser("predict", help="predictions.csv for images, volumes or DICOM series")
    pr.add_argument("run")
    pr.add_argument("inputs", nargs="*", metavar="INPUT")
    pr.add_argument("--manifest", help="CSV of studies (a `path` column; relative paths resolve against the CSV's "
                                       "folder) instead of, or beside, INPUT")
    pr.add_argument("--out", required=True, help=OUT_HELP)
    pr.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="predict here (local, default) or on a Ray cluster (pip install meddx[ray])")
    pr.add_argument("--address", help="Ray cluster address (auto, ray://host:port; default: a local Ray)")
    pr.add_argument("--runtime", choices=["keras", "onnx", "openvino"], default="keras",
                    help="run the RUN's exported model (meddx export) instead of Keras")
    pr.add_argument("--allow-ood", action="store_true", dest="allow_ood",
                    help="give a diagnosis even for inputs outside the model's training distribution")
    pr.add_argument("--include-phi", action="store_true", dest="include_phi",
                    help="name studies by their input paths in outputs (default: study_001 ...)")
    pr.add_argument("--heatmaps", action="store_true", help="also write Grad-CAM heatmaps, overlays and lesions.csv")
    pr.add_argument("--coverage", type=float, default=0.9,
                    help="target coverage of the conformal prediction sets (default 0.9: the set holds the true class for 90 %% of cases like the validation ones)")
    pr.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "occlusion"])
    pr.add_argument("--tta", action="store_true", help=TTA_HELP)

    r = sub.add_parser("report", help="report.html + report.pdf per study (+ DICOM SEG/SR for DICOM series)")
    r.add_argument("run")
    r.add_argument("inputs", nargs="+", metavar="INPUT")
    r.add_argument("--out", required=True, help=OUT_HELP)
    r.add_argument("--include-phi", action="store_true", help="show patient identifiers (off by default)")
    r.add_argument("--no-dicom", action="store_true", help="skip DICOM SEG/SR outputs")
    r.add_argument("--coverage", type=float, default=0.9,
                   help="target coverage of the conformal prediction sets (default 0.9: the set holds the true class for 90 %% of cases like the validation ones)")
    r.add_argument("--tta", action="store_true", help=TTA_HELP)
    r.add_argument("--allow-ood", action="store_true", dest="allow_ood",
                   help="give a diagnosis even for inputs outside the model's training distribution")
    r.add_argument("--deidentify-dicom", action="store_true", dest="deidentify_dicom",
                   help="write DICOM SEG/SR with the PS3.15 basic de-identification profile applied")

    i = sub.add_parser("info", help="what the reader sees: shape, spacing, orientation, modality, range")
    i.add_argument("input")
    i.add_argument("--series", help="SeriesInstanceUID to pick in a folder with several series")
    i.add_argument("--json", action="store_true")

    dl = sub.add_parser("download", help="download an official MedMNIST file (needs internet)")
    dl.add_argument("flag", help="e.g. breastmnist, pneumoniamnist, adrenalmnist3d")
    dl.add_argument("--root", help="folder (default ~/.meddx/medmnist or $MEDDX_DATA)")

    sub.add_parser("models", help="list the registered models")

    ex = sub.add_parser("export", help="export a RUN's model (SavedModel, ONNX, OpenVINO, LiteRT) with a parity check")
    ex.add_argument("run")
    ex.add_argument("--format", required=True, choices=["savedmodel", "onnx", "openvino", "litert"], dest="fmt")
    ex.add_argument("--out", help="folder to write (default RUN/export/FORMAT, where predict --runtime looks)")
    ex.add_argument("--tolerance", type=float, help="largest accepted |exported - Keras| output difference")

    sv = sub.add_parser("serve", help="HTTP inference service + web viewer (loopback, bearer token required)")
    sv.add_argument("runs", nargs="+", metavar="RUN")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token-file", dest="token_file", help="file holding the bearer token (else $MEDDX_TOKEN)")
    sv.add_argument("--workers", type=int, default=1,
                    help="model threads (default 1: TensorFlow already uses every core for one batch; 1 measured "
                         "faster than 2 on a 2-core box)")
    sv.add_argument("--queue", type=int, default=32, help="requests waiting beyond this answer 503 (default 32)")
    sv.add_argument("--max-upload-mb", type=float, default=512, dest="max_upload_mb")
    sv.add_argument("--results", help="folder of processed studies the viewer lists (default: a temporary one)")
    sv.add_argument("--orthanc", help="Orthanc URL the viewer links studies to")

    pc = sub.add_parser("pacs", help="a loopback Orthanc PACS, and a watcher that runs models on its new studies")
    psub = pc.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)
    po = psub.add_parser("orthanc", help="write an Orthanc configuration and run Orthanc in the foreground")
    po.add_argument("--storage", required=True, help="folder for Orthanc's database and configuration")
    po.add_argument("--http-port", type=int, default=8042, dest="http_port")
    po.add_argument("--dicom-port", type=int, default=4242, dest="dicom_port")
    po.add_argument("--credentials", help="file with user:password for Orthanc's HTTP API (default: generated in "
                                          "--storage)")
    pw = psub.add_parser("watch", help="follow Orthanc's changes; predict each new stable study; store SR/SEG/PDF")
    pw.add_argument("--orthanc", required=True, help="Orthanc URL, e.g. http://127.0.0.1:8042")
    pw.add_argument("--model", required=True, action="append", dest="models", metavar="RUN",
                    help="a RUN (repeat for several; --routing chooses among them)")
    pw.add_argument("--routing", help="YAML rules: which RUN for which modality / body part / series description")
    pw.add_argument("--credentials", help="file with user:password for Orthanc")
    pw.add_argument("--state", help="folder keeping the watcher's position and processed studies")
    pw.add_argument("--once", action="store_true", help="process what is there now, then exit")
    pw.add_argument("--results", help="also save each processed study in this results folder (`meddx serve "
                                      "--results` lists it in the viewer)")

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
                                                         "frames", "frame_sampling", "smoother", "devices",
                                                         "allow_rare_classes", "class_weights", "members")},
                          source="command line")
        cfg = cfg.updated({"image_size": args.image_size})
        from meddx.app.common import choose_trainer

        if args.folds:
            from meddx.app.crossval import cross_validate

            cross_validate(args.data, args.out, cfg, folds=args.folds, engine=args.engine, model=args.model,
                           overwrite=args.overwrite)
            return 0
        fit, cfg = choose_trainer(args.data, cfg, args.model)
        fit(args.data, args.out, cfg, overwrite=args.overwrite)
        return 0
    if cmd == "evaluate":
        from meddx.app import evaluate_run

        evaluate_run(args.run, args.data, args.out, split=args.split, report=args.report, tta=args.tta,
                     stack_min_fraction=args.stack_min_fraction, coverage=args.coverage)
        return 0
    if cmd == "predict":
        from meddx.app import predict_inputs

        predict_inputs(args.run, args.inputs, args.out, heatmaps=args.heatmaps, method=args.method, tta=args.tta,
                       manifest=args.manifest, engine=args.engine, address=args.address, runtime=args.runtime,
                       allow_ood=args.allow_ood, include_phi=args.include_phi, coverage=args.coverage)
        return 0
    if cmd == "report":
        from meddx.app import report_studies

        report_studies(args.run, args.inputs, args.out, include_phi=args.include_phi, dicom=not args.no_dicom,
                       tta=args.tta, allow_ood=args.allow_ood, deidentify_dicom=args.deidentify_dicom,
                       coverage=args.coverage)
        return 0
    if cmd == "demo":
        from meddx.app import run_demo

        run_demo(args.out, data=args.data, n=args.n, minutes=args.minutes, epochs=args.epochs, seed=args.seed)
        return 0
    if cmd == "export":
        from meddx.app.export import export_run

        export_run(args.run, args.fmt, args.out, tolerance=args.tolerance)
        return 0
    if cmd == "serve":
        from meddx.service.server import serve

        serve(args.runs, host=args.host, port=args.port, token_file=args.token_file, workers=args.workers,
              queue=args.queue, max_upload_mb=args.max_upload_mb, results=args.results, orthanc_url=args.orthanc)
        return 0
    if cmd == "pacs" and args.pacs_command == "orthanc":
        from meddx.pacs.orthanc import run_orthanc

        return run_orthanc(args.storage, http_port=args.http_port, dicom_port=args.dicom_port,
                           credentials=args.credentials)
    if cmd == "pacs" and args.pacs_command == "watch":
        from meddx.pacs.watch import watch

        watch(args.orthanc, args.models, routing=args.routing, credentials=args.credentials, state=args.state,
              once=args.once, results=args.results)
        return 0
    if cmd == "compare":
        from meddx.app.compare import compare_models

        compare_models(args.data, args.models.split(","), args.out, seed=args.seed, epochs=args.epochs)
        return 0
    return 1


TF_COMMANDS = ("train", "evaluate", "predict", "report", "demo", "compare", "export", "serve", "pacs")


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


def _quiet_tensorflow_import(lean: bool = False) -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN notice, absl warning) kept off the terminal; the
    banner is replayed if the import fails, so nothing is hidden from a real error. `lean` (predict): without
    Keras's optional scikit-learn/pandas/matplotlib imports (`app.common.without_optional_imports`)."""
    if "tensorflow" in sys.modules:
        return
    if lean:
        from meddx.app.common import without_optional_imports

        with without_optional_imports():
            return _quiet_tensorflow_import()
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
    _quiet_third_party()
    if args.command in TF_COMMANDS and getattr(args, "runtime", "keras") == "keras":
        _quiet_tensorflow_import(lean=args.command == "predict")  # --runtime onnx|openvino: no TensorFlow at all

    try:
        return _run(args)
    except MeddxError as exc:
        print(f"meddx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("meddx: interrupted (a training run resumes when started again with the same --out)", file=sys.stderr)
        return 130
    except MemoryError:
        print("meddx: error: out of memory: process fewer or smaller inputs at once, train with a smaller "
              "--image-size or --batch-size, or use a machine with more memory", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only, permission denied... (file-system errors, not meddx bugs)
        from meddx.app.outputs import describe_os_error

        where = f"{exc.filename}: " if exc.filename else ""
        print(f"meddx: error: {where}{describe_os_error(exc)}", file=sys.stderr)
        return 2


def _quiet_third_party() -> None:
    """Third-party warnings and log records (TensorFlow, absl, Pillow, matplotlib...) never reach the user's
    stderr: Python warnings go to logging, and the root logger gets a do-nothing handler so that no record falls
    through to logging's last-resort stderr printer. meddx's own logger keeps its handlers."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not any(getattr(h, "_meddx_cli", False) for h in root.handlers):
        sink = logging.NullHandler()
        sink._meddx_cli = True  # type: ignore[attr-defined]
        root.addHandler(sink)
    for name in ("tensorflow", "absl", "h5py", "PIL", "matplotlib", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
