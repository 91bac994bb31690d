"""Hostile and faulty inputs for `meddx info/train/evaluate/predict/report`, each generated in a temporary folder.

Each case builds its inputs under `tmp` and returns a `Case`: the command line, the text the one error line must
name (usually the offending file), and the output folder that must be left without anything that looks complete.
`run_case` runs it in-process through `meddx.cli.main` and sorts the outcome into clean / traceback / wrong result /
messy (exit 2 but not exactly one `meddx: error:` line naming the file)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# MEDDX_HOSTILE_DEMO_RUN: the demo RUN of another checkout (to count an older version's outcomes)
DEMO_CLS = Path(os.environ.get("MEDDX_HOSTILE_DEMO_RUN", REPO / "tests" / "fixtures" / "runs" / "demo_cls"))


@dataclass
class Case:
    """A command line that must fail cleanly."""

    argv: list[str]
    names: str  # the error line must contain this (the file or option at fault)
    out: Path | None = None  # must hold no new file afterwards
    patches: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)  # (dotted attribute, replacement)


# -- input builders -----------------------------------------------------------------------------------------

def png(path: Path, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    PILImage.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(path, format="PNG")
    return path


def dicom(path: Path, z: float = 0.0, sop: str | None = None, series: str = "1.2.826.0.1.3680043.8.498.1",
          rows: int = 64, cols: int = 64, ts: str = "1.2.840.10008.1.2.1", iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
          pixels: bool = True, **extra: Any) -> Path:
    """A small CT slice with patient identifiers and free text in its header (for the PHI tests too)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, UID

    sop = sop or f"1.2.826.0.1.3680043.8.498.2.{abs(hash((str(path), z))) % 10**12}"
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(ts)
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3", series
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4"
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientBirthDate = "CT", "Doe^Jane", "PID-8841", "19610214"
    ds.StudyDescription = "CT chest Jane Doe follow-up"
    ds.SeriesDescription, ds.ProtocolName = "Doe private series", "Protocol for J Doe"
    ds.StudyDate, ds.AccessionNumber, ds.PatientSex = "20240102", "ACC7781", "F"
    ds.StudyID, ds.StudyTime, ds.ReferringPhysicianName = "STU-5521", "101500", "House^Gregory"
    ds.SeriesNumber, ds.Manufacturer = 3, "ACME"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 2.0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.InstanceNumber = int(z) + 1
    for k, v in extra.items():
        setattr(ds, k, v)
    if pixels:
        rng = np.random.default_rng(int(abs(z)))
        ds.PixelData = rng.integers(0, 2000, (max(rows, 1), max(cols, 1)), dtype=np.int16).tobytes()
    private_ts = not UID(ts).is_transfer_syntax
    ds.save_as(path, enforce_file_format=True, **({"implicit_vr": False, "little_endian": True} if private_ts else {}))
    return path


def series(folder: Path, zs: list[float], **kw: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, z in enumerate(zs):
        dicom(folder / f"IM{i:04d}.dcm", z=z, sop=kw.pop("sop", None) if False else None, **kw)
    return folder


def nifti(path: Path, affine: np.ndarray | None = None, shape: tuple[int, ...] = (16, 16, 8)) -> Path:
    """A NIfTI-1 file; `affine` is written byte for byte into the sform rows (qform off), so that a NaN or singular
    affine nibabel would refuse to save still reaches the reader."""
    import gzip

    import nibabel as nib

    raw = path.with_name(path.name.replace(".gz", "") + ".tmp.nii")
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(raw))
    b = bytearray(raw.read_bytes())
    raw.unlink()
    if affine is not None:
        b[252:256] = struct.pack("<hh", 0, 1)  # qform_code 0, sform_code 1
        b[280:328] = np.asarray(affine, "<f4")[:3].tobytes()
    path.write_bytes(gzip.compress(bytes(b)) if path.name.endswith(".gz") else bytes(b))
    return path


def npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def good_npz(path: Path, n: int = 40, labels: Any = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for s in ("train", "val", "test"):
        out[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        out[f"{s}_labels"] = (np.arange(n) % 2).reshape(-1, 1) if labels is None else labels
    return out


def copy_run(tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(DEMO_CLS, run)
    return run


def _raise(err: int) -> Callable[..., Any]:
    def fail(*_: Any, **__: Any) -> Any:
        raise OSError(err, {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
                            errno.EACCES: "Permission denied"}[err])
    return fail


# -- the cases ------------------------------------------------------------------------------------------------

def c_missing(tmp: Path) -> Case:
    return Case(["info", str(tmp / "nope.dcm")], "nope.dcm")


def c_empty_file(tmp: Path) -> Case:
    (tmp / "empty.png").write_bytes(b"")
    return Case(["info", str(tmp / "empty.png")], "empty.png")


def c_empty_folder(tmp: Path) -> Case:
    (tmp / "empty").mkdir()
    return Case(["info", str(tmp / "empty")], "empty")


def c_random_bytes_dcm(tmp: Path) -> Case:
    (tmp / "noise.dcm").write_bytes(np.random.default_rng(1).bytes(4000))
    return Case(["info", str(tmp / "noise.dcm")], "noise.dcm")


def c_dicom_truncated_header(tmp: Path) -> Case:
    f = dicom(tmp / "t.dcm")
    f.write_bytes(f.read_bytes()[:300])
    return Case(["info", str(f)], "t.dcm")


def c_dicom_truncated_pixels(tmp: Path) -> Case:
    f = dicom(tmp / "tp.dcm")
    f.write_bytes(f.read_bytes()[:-3000])
    return Case(["info", str(f)], "tp.dcm")


def c_dicom_unknown_ts(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "ts.dcm", ts="1.2.3.4.5.6.7"))], "ts.dcm")


def c_dicom_rows_zero(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "r0.dcm", rows=0))], "r0.dcm")


def c_dicom_cols_zero_no_pixels(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "c0.dcm", cols=0, pixels=False))], "c0.dcm")


def c_dicom_no_pixels(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "np.dcm", pixels=False))], "np.dcm")


def c_dicom_bits_allocated_odd(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "b12.dcm", BitsAllocated=12, BitsStored=12, HighBit=11))], "b12.dcm")


def c_dicom_huge_dims(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "huge.dcm", rows=65535, cols=65535, pixels=False,
                                   NumberOfFrames=60000, PixelData=b"\0" * 16))], "huge.dcm")


def c_dicom_bad_photometric(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "ph.dcm", PhotometricInterpretation="PALETTE COLOR"))], "ph.dcm")


def c_series_duplicate_sop(tmp: Path) -> Case:
    folder = tmp / "dupsop"
    series(folder, [0.0, 2.0, 4.0, 6.0])
    shutil.copy(folder / "IM0002.dcm", folder / "IM0002_copy.dcm")
    return Case(["info", str(folder)], "dupsop")


def c_series_all_duplicated(tmp: Path) -> Case:
    """Every file copied twice: today silently a 4D sequence of two identical 'time points'."""
    folder = tmp / "dupall"
    series(folder, [0.0, 2.0, 4.0])
    for f in sorted(folder.glob("*.dcm")):
        shutil.copy(f, folder / f"{f.stem}_b.dcm")
    return Case(["info", str(folder)], "dupall")


def c_series_mixed_orientation(tmp: Path) -> Case:
    folder = tmp / "mixori"
    series(folder, [0.0, 2.0, 4.0])
    dicom(folder / "IMloc.dcm", z=10.0, iop=(0, 1, 0, 0, 0, -1))
    return Case(["info", str(folder)], "mixori")


def c_series_mixed_sizes(tmp: Path) -> Case:
    folder = tmp / "mixsize"
    series(folder, [0.0, 2.0, 4.0])
    dicom(folder / "IMbig.dcm", z=6.0, rows=32, cols=32)
    return Case(["info", str(folder)], "mixsize")


def c_nifti_nan_affine(tmp: Path) -> Case:
    aff = np.eye(4)
    aff[0, 0] = np.nan
    return Case(["info", str(nifti(tmp / "nan.nii.gz", aff))], "nan.nii.gz")


def c_nifti_truncated(tmp: Path) -> Case:
    f = nifti(tmp / "tr.nii", shape=(32, 32, 16))
    f.write_bytes(f.read_bytes()[:2000])
    return Case(["info", str(f)], "tr.nii")


def c_nifti_gz_corrupt(tmp: Path) -> Case:
    f = nifti(tmp / "cg.nii.gz", shape=(32, 32, 16))
    b = bytearray(f.read_bytes())
    b[40:80] = b"\xff" * 40
    f.write_bytes(bytes(b))
    return Case(["info", str(f)], "cg.nii.gz")


def c_nifti_singular_affine(tmp: Path) -> Case:
    return Case(["info", str(nifti(tmp / "sing.nii", np.zeros((4, 4))))], "sing.nii")


def c_png_bomb(tmp: Path) -> Case:
    """A 3 kB PNG that declares 60000 x 60000 pixels (a decompression bomb)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    w = h = 60000
    raw = zlib.compress(b"\0" * (w + 1) * 4, 9)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    (tmp / "bomb.png").write_bytes(data)
    return Case(["info", str(tmp / "bomb.png")], "bomb.png")


def c_png_moderate_bomb_predict(tmp: Path) -> Case:
    """Over Pillow's warning limit (~89 Mpx) but under the error limit: Pillow's warning must not reach stderr."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    w, h = 12000, 9000
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    (tmp / "mbomb.png").write_bytes(data)
    return Case(["info", str(tmp / "mbomb.png")], "mbomb.png")


def c_png_truncated(tmp: Path) -> Case:
    f = png(tmp / "trunc.png", (256, 256))
    f.write_bytes(f.read_bytes()[:500])
    return Case(["info", str(f)], "trunc.png")


def c_png_is_text(tmp: Path) -> Case:
    (tmp / "text.png").write_text("hello, not an image\n")
    return Case(["info", str(tmp / "text.png")], "text.png")


def c_jpeg_truncated(tmp: Path) -> Case:
    from PIL import Image as PILImage

    f = tmp / "t.jpg"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)).save(f)
    f.write_bytes(f.read_bytes()[:400])
    return Case(["info", str(f)], "t.jpg")


def c_tiff_pages_differ(tmp: Path) -> Case:
    from PIL import Image as PILImage

    f = tmp / "pages.tif"
    a = PILImage.fromarray(np.zeros((20, 20), np.uint8))
    a.save(f, save_all=True, append_images=[PILImage.fromarray(np.zeros((30, 10), np.uint8))])
    return Case(["info", str(f)], "pages.tif")


def c_npy_pickle(tmp: Path) -> Case:
    np.save(tmp / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return Case(["info", str(tmp / "obj.npy")], "obj.npy")


def c_npy_truncated(tmp: Path) -> Case:
    np.save(tmp / "t.npy", np.zeros((64, 64), np.float32))
    f = tmp / "t.npy"
    f.write_bytes(f.read_bytes()[:1000])
    return Case(["info", str(f)], "t.npy")


def c_npy_1d(tmp: Path) -> Case:
    np.save(tmp / "v.npy", np.zeros(10))
    return Case(["info", str(tmp / "v.npy")], "v.npy")


def c_nrrd_bad_header(tmp: Path) -> Case:
    (tmp / "bad.nrrd").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10\nencoding: raw\n\n")
    return Case(["info", str(tmp / "bad.nrrd")], "bad.nrrd")


def c_mha_missing_raw(tmp: Path) -> Case:
    (tmp / "x.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                               "ElementDataFile = missing.raw\n")
    return Case(["info", str(tmp / "x.mhd")], "x.mhd")


def c_unknown_extension(tmp: Path) -> Case:
    (tmp / "scan.xyz").write_bytes(b"\1\2\3" * 100)
    return Case(["info", str(tmp / "scan.xyz")], "scan.xyz")


def c_folder_of_text(tmp: Path) -> Case:
    d = tmp / "texts"
    d.mkdir()
    for i in range(3):
        (d / f"note{i}.txt").write_text("x")
    return Case(["info", str(d)], "texts")


def c_gif_corrupt(tmp: Path) -> Case:
    (tmp / "c.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    return Case(["info", str(tmp / "c.gif")], "c.gif")


def c_name_with_newline(tmp: Path) -> Case:
    f = tmp / "bad\nname.png"
    f.write_bytes(b"not a png")
    return Case(["info", str(f)], "bad name.png")


# -- predict / report: the RUN and the output folder ----------------------------------------------------------

def c_predict_run_missing(tmp: Path) -> Case:
    return Case(["predict", str(tmp / "norun"), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "norun",
                tmp / "o")


def c_predict_run_json_corrupt(tmp: Path) -> Case:
    run = copy_run(tmp)
    (run / "run.json").write_text("{ not json")
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run.json", tmp / "o")


def c_predict_run_json_truncated(tmp: Path) -> Case:
    run = copy_run(tmp)
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[: len(text) // 2])
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run.json", tmp / "o")


def _edit_run_json(tmp: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    run = copy_run(tmp)
    info = json.loads((run / "run.json").read_text())
    edit(info)
    (run / "run.json").write_text(json.dumps(info))
    return run


def c_predict_run_json_list(tmp: Path) -> Case:
    run = copy_run(tmp)
    (run / "run.json").write_text("[1, 2, 3]")
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run.json", tmp / "o")


def c_predict_run_json_class_count(tmp: Path) -> Case:
    run = _edit_run_json(tmp, lambda i: i.update(class_names=["a", "b", "c", "d", "e"], task="multiclass"))
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_run_json_input_shape(tmp: Path) -> Case:
    run = _edit_run_json(tmp, lambda i: i.update(input_shape="sixty-four"))
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_run_json_no_preprocessing(tmp: Path) -> Case:
    run = _edit_run_json(tmp, lambda i: i.pop("preprocessing"))
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_run_json_kind(tmp: Path) -> Case:
    run = _edit_run_json(tmp, lambda i: i.update(kind="teapot"))
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_model_not_zip(tmp: Path) -> Case:
    run = copy_run(tmp)
    (run / "model.keras").write_bytes(b"this is not a keras file")
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_model_truncated(tmp: Path) -> Case:
    run = copy_run(tmp)
    b = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(b[: len(b) // 3])
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_model_lambda(tmp: Path) -> Case:
    """model.keras whose config was edited to hold a Lambda layer with code: safe_mode must refuse it."""
    run = copy_run(tmp)
    src = run / "model.keras"
    with zipfile.ZipFile(src) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(parts["config.json"])
    layers = cfg["config"]["layers"]
    lam = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "evil",
           "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
               "code": "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAdAB8AIMBUwApAU4pAdoFcHJpbnQpAdoBeKkAcgMAAAD6"
                       "ATzaCDxsYW1iZGE+AQAAAPMAAAAA", "defaults": None, "closure": None}},
               "arguments": {}}, "build_config": {"input_shape": [None, 64, 64, 1]}}
    layers.insert(1, lam)
    parts["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(src, "w") as z:
        for n, b in parts.items():
            z.writestr(n, b)
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_model_config_garbage(tmp: Path) -> Case:
    run = copy_run(tmp)
    src = run / "model.keras"
    with zipfile.ZipFile(src) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts["config.json"] = b'{"class_name": 42, "config": []}'
    with zipfile.ZipFile(src, "w") as z:
        for n, b in parts.items():
            z.writestr(n, b)
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_model_missing(tmp: Path) -> Case:
    run = copy_run(tmp)
    (run / "model.keras").unlink()
    return Case(["predict", str(run), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run", tmp / "o")


def c_predict_out_is_file(tmp: Path) -> Case:
    (tmp / "o").write_text("I am a file")
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "o")


def c_predict_out_parent_is_file(tmp: Path) -> Case:
    (tmp / "f").write_text("I am a file")
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "f" / "o")], "f")


def c_predict_one_bad_among_good(tmp: Path) -> Case:
    d = tmp / "batch"
    d.mkdir()
    for i in range(4):
        png(d / f"img{i}.png", seed=i)
    (d / "img9.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return Case(["predict", str(DEMO_CLS), str(d), "--out", str(tmp / "o")], "img9.png", tmp / "o")


def c_predict_disk_full(tmp: Path) -> Case:
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "o", tmp / "o",
                patches=[("os.replace", _raise(errno.ENOSPC)), ("os.rename", _raise(errno.ENOSPC))])


def c_predict_read_only(tmp: Path) -> Case:
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "ro" / "o")], "o",
                tmp / "ro", patches=[("os.mkdir", _raise(errno.EROFS))])


def c_predict_other_study_in_out(tmp: Path) -> Case:
    out = tmp / "o"
    out.mkdir()
    (out / "predictions.csv").write_text("input,predicted\nother_patient.png,lesion\n")
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(out)], "o", out)


def c_report_out_is_file(tmp: Path) -> Case:
    (tmp / "o").write_text("I am a file")
    return Case(["report", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "o")


def c_report_other_study_in_out(tmp: Path) -> Case:
    out = tmp / "o"
    out.mkdir()
    (out / "report.html").write_text("<html>another patient's report</html>")
    return Case(["report", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(out)], "o", out)


def c_report_disk_full(tmp: Path) -> Case:
    return Case(["report", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "o", tmp / "o",
                patches=[("os.replace", _raise(errno.ENOSPC)), ("os.rename", _raise(errno.ENOSPC))])


def c_report_permission(tmp: Path) -> Case:
    return Case(["report", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "o", tmp / "o",
                patches=[("os.mkdir", _raise(errno.EACCES))])


def c_report_series_duplicate_slices(tmp: Path) -> Case:
    folder = tmp / "dupseries"
    series(folder, [0.0, 2.0, 4.0, 6.0])
    shutil.copy(folder / "IM0001.dcm", folder / "IM0001_again.dcm")
    return Case(["report", str(DEMO_CLS), str(folder), "--out", str(tmp / "o")], "dupseries", tmp / "o")


def c_predict_memory_error(tmp: Path) -> Case:
    def boom(*_: Any, **__: Any) -> Any:
        raise MemoryError()
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "a.png", tmp / "o",
                patches=[("meddx.io.raster.read_raster", boom)])


# -- train / evaluate: datasets ----------------------------------------------------------------------------

def c_train_npz_truncated(tmp: Path) -> Case:
    f = npz(tmp / "d.npz", **good_npz(tmp))
    f.write_bytes(f.read_bytes()[:3000])
    return Case(["train", str(f), "--out", str(tmp / "r")], "d.npz", tmp / "r")


def c_train_npz_empty_split(tmp: Path) -> Case:
    a = good_npz(tmp)
    a["train_images"], a["train_labels"] = a["train_images"][:0], a["train_labels"][:0]
    f = npz(tmp / "e.npz", **a)
    return Case(["train", str(f), "--out", str(tmp / "r")], "e.npz", tmp / "r")


def c_train_npz_string_labels(tmp: Path) -> Case:
    a = good_npz(tmp)
    for s in ("train", "val", "test"):
        a[f"{s}_labels"] = np.array(["cat", "dog"] * 20)
    return Case(["train", str(npz(tmp / "s.npz", **a)), "--out", str(tmp / "r")], "s.npz", tmp / "r")


def c_train_npz_pickled(tmp: Path) -> Case:
    a = good_npz(tmp)
    a["train_labels"] = np.array([{"x": 1}] * 40, dtype=object)
    return Case(["train", str(npz(tmp / "p.npz", **a)), "--out", str(tmp / "r")], "p.npz", tmp / "r")


def c_train_npz_nan_images(tmp: Path) -> Case:
    a = good_npz(tmp)
    imgs = a["train_images"].astype(np.float32)
    imgs[3, 5, 5] = np.nan
    a["train_images"] = imgs
    for s in ("val", "test"):
        a[f"{s}_images"] = a[f"{s}_images"].astype(np.float32)
    return Case(["train", str(npz(tmp / "n.npz", **a)), "--out", str(tmp / "r")], "n.npz", tmp / "r")


def c_train_npz_negative_labels(tmp: Path) -> Case:
    a = good_npz(tmp)
    a["train_labels"] = -np.ones((40, 1), int)
    return Case(["train", str(npz(tmp / "neg.npz", **a)), "--out", str(tmp / "r")], "neg.npz", tmp / "r")


def c_train_npz_1d_images(tmp: Path) -> Case:
    return Case(["train", str(npz(tmp / "flat.npz", train_images=np.zeros((10, 5)), train_labels=np.zeros(10))),
                 "--out", str(tmp / "r")], "flat.npz", tmp / "r")


def c_train_npz_is_a_png(tmp: Path) -> Case:
    png(tmp / "fake.npz")
    return Case(["train", str(tmp / "fake.npz"), "--out", str(tmp / "r")], "fake.npz", tmp / "r")


def _manifest_images(tmp: Path, n: int = 6) -> None:
    for i in range(n):
        png(tmp / f"m{i}.png", seed=i)


def c_train_csv_extra_fields(tmp: Path) -> Case:
    _manifest_images(tmp)
    rows = ["path,label"] + [f"m{i}.png,{'ab'[i % 2]}" for i in range(6)]
    rows[3] += ",surprise,extra"
    (tmp / "m.csv").write_text("\n".join(rows) + "\n")
    return Case(["train", str(tmp / "m.csv"), "--out", str(tmp / "r")], "m.csv", tmp / "r")


def c_train_csv_missing_column(tmp: Path) -> Case:
    _manifest_images(tmp)
    (tmp / "m.csv").write_text("file,label\n" + "".join(f"m{i}.png,a\n" for i in range(6)))
    return Case(["train", str(tmp / "m.csv"), "--out", str(tmp / "r")], "m.csv", tmp / "r")


def c_train_csv_missing_file(tmp: Path) -> Case:
    _manifest_images(tmp)
    (tmp / "m.csv").write_text("path,label\n" + "".join(f"m{i}.png,{'ab'[i % 2]}\n" for i in range(6))
                               + "ghost.png,a\n")
    return Case(["train", str(tmp / "m.csv"), "--out", str(tmp / "r")], "m.csv", tmp / "r")


def c_train_csv_binary_garbage(tmp: Path) -> Case:
    (tmp / "m.csv").write_bytes(b"\xff\xfe\x00\x00" + np.random.default_rng(0).bytes(500))
    return Case(["train", str(tmp / "m.csv"), "--out", str(tmp / "r")], "m.csv", tmp / "r")


def c_train_config_corrupt(tmp: Path) -> Case:
    f = good_npz(tmp)
    data = npz(tmp / "d.npz", **f)
    (tmp / "cfg.toml").write_text("epochs = = 3\n[[[")
    return Case(["train", str(data), "--out", str(tmp / "r"), "--config", str(tmp / "cfg.toml")], "cfg.toml",
                tmp / "r")


def c_train_config_unknown_key(tmp: Path) -> Case:
    data = npz(tmp / "d.npz", **good_npz(tmp))
    (tmp / "cfg.json").write_text('{"epochz": 3}')
    return Case(["train", str(data), "--out", str(tmp / "r"), "--config", str(tmp / "cfg.json")], "cfg.json",
                tmp / "r")


def c_train_config_bad_type(tmp: Path) -> Case:
    data = npz(tmp / "d.npz", **good_npz(tmp))
    (tmp / "cfg.json").write_text('{"epochs": "many"}')
    return Case(["train", str(data), "--out", str(tmp / "r"), "--config", str(tmp / "cfg.json")], "cfg.json",
                tmp / "r")


def c_train_one_class_folder(tmp: Path) -> Case:
    d = tmp / "classes" / "only"
    d.mkdir(parents=True)
    for i in range(4):
        png(d / f"{i}.png", seed=i)
    return Case(["train", str(tmp / "classes"), "--out", str(tmp / "r")], "classes", tmp / "r")


def c_train_out_is_file(tmp: Path) -> Case:
    data = npz(tmp / "d.npz", **good_npz(tmp))
    (tmp / "r").write_text("file")
    return Case(["train", str(data), "--out", str(tmp / "r")], "r")


def c_evaluate_unknown_split(tmp: Path) -> Case:
    data = npz(tmp / "d.npz", **good_npz(tmp))
    return Case(["evaluate", str(DEMO_CLS), str(data), "--split", "tset", "--out", str(tmp / "e")], "tset",
                tmp / "e")


def c_evaluate_out_is_file(tmp: Path) -> Case:
    data = npz(tmp / "d.npz", **good_npz(tmp))
    (tmp / "e").write_text("file")
    return Case(["evaluate", str(DEMO_CLS), str(data), "--out", str(tmp / "e")], "e")


def c_evaluate_truncated_npz(tmp: Path) -> Case:
    f = npz(tmp / "d.npz", **good_npz(tmp))
    f.write_bytes(f.read_bytes()[:2000])
    return Case(["evaluate", str(DEMO_CLS), str(f), "--out", str(tmp / "e")], "d.npz", tmp / "e")


def c_evaluate_unseen_label(tmp: Path) -> Case:
    a = good_npz(tmp)
    a["test_labels"] = (np.arange(40) % 5).reshape(-1, 1)
    return Case(["evaluate", str(DEMO_CLS), str(npz(tmp / "u.npz", **a)), "--out", str(tmp / "e")], "u.npz",
                tmp / "e")


def c_evaluate_empty_test_split(tmp: Path) -> Case:
    a = good_npz(tmp)
    a["test_images"], a["test_labels"] = a["test_images"][:0], a["test_labels"][:0]
    return Case(["evaluate", str(DEMO_CLS), str(npz(tmp / "et.npz", **a)), "--out", str(tmp / "e")], "et.npz",
                tmp / "e")


def c_info_dev_null(tmp: Path) -> Case:
    return Case(["info", "/dev/null"], "/dev/null")


def c_dicom_nframes_garbage(tmp: Path) -> Case:
    return Case(["info", str(dicom(tmp / "nf.dcm", NumberOfFrames="-5"))], "nf.dcm")


def c_predict_out_name_too_long(tmp: Path) -> Case:
    out = tmp / ("x" * 300)
    return Case(["predict", str(DEMO_CLS), str(png(tmp / "a.png")), "--out", str(out)], "x" * 50, tmp)


def c_predict_manifest_missing_file(tmp: Path) -> Case:
    (tmp / "studies.csv").write_text("path\nghost_scan.png\n")
    return Case(["predict", str(DEMO_CLS), "--manifest", str(tmp / "studies.csv"), "--out", str(tmp / "o")],
                "ghost_scan.png", tmp / "o")


def c_predict_run_is_a_file(tmp: Path) -> Case:
    (tmp / "run.txt").write_text("not a run")
    return Case(["predict", str(tmp / "run.txt"), str(png(tmp / "a.png")), "--out", str(tmp / "o")], "run.txt",
                tmp / "o")


def c_report_series_slice_cut_in_pixels(tmp: Path) -> Case:
    folder = series(tmp / "cutseries", [0.0, 2.0, 4.0, 6.0])
    f = folder / "IM0002.dcm"
    f.write_bytes(f.read_bytes()[:-3000])
    return Case(["report", str(DEMO_CLS), str(folder), "--out", str(tmp / "o")], "IM0002.dcm", tmp / "o")


def c_train_npz_huge_header(tmp: Path) -> Case:
    """An .npz whose train_images member declares 10^12 bytes but holds a few: no allocation, one line."""
    a = good_npz(tmp)
    f = npz(tmp / "huge.npz", **a)
    with zipfile.ZipFile(f) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    header = parts["train_images.npy"]
    parts["train_images.npy"] = header.replace(b"(40, 28, 28)", b"(40000000, 28, 900)", 1)
    with zipfile.ZipFile(f, "w") as z:
        for n, b in parts.items():
            z.writestr(n, b)
    return Case(["train", str(f), "--out", str(tmp / "r")], "huge.npz", tmp / "r")


def c_train_class_folder_empty(tmp: Path) -> Case:
    root = tmp / "classes"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        png(root / "a" / f"{i}.png", seed=i)
    return Case(["train", str(root), "--out", str(tmp / "r")], "classes", tmp / "r")


CASES: dict[str, Callable[[Path], Case]] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_") and callable(fn)}


# -- running ---------------------------------------------------------------------------------------------------

# `meddx train` records the settings it starts with before reading DATA (an interrupted run resumes only with the
# same settings); this stub is not a result and a later run with other data starts afresh, so it may stay.
NOT_A_RESULT = {"resume.json"}


def files_under(path: Path | None) -> set[str]:
    """Files under `path` (hidden staging folders included: a failure must remove them too)."""
    if path is None or not path.is_dir():
        return set()
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() or p.is_symlink()}


def siblings(path: Path | None) -> set[str]:
    """Hidden staging folders next to `path` (`.NAME.partial-*`): none may survive a failure."""
    if path is None or not path.parent.is_dir():
        return set()
    return {p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")}


def classify(case: Case, rc: Any, err: str, before: set[str], exc: BaseException | None) -> tuple[str, str]:
    """('clean' | 'traceback' | 'wrong result' | 'messy', detail)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if exc is not None or any("Traceback" in ln for ln in lines):
        return "traceback", f"{type(exc).__name__}: {exc}" if exc is not None else err[-500:]
    left = sorted(f for f in files_under(case.out) - before if f not in NOT_A_RESULT) + sorted(siblings(case.out))
    if rc == 0:
        return "wrong result", f"exit 0; stderr: {err[-300:]!r}"
    if left:
        return "wrong result", f"exit {rc} but left {left[:5]}"
    if rc != 2 or len(lines) != 1 or not lines[0].startswith("meddx: error:"):
        return "messy", f"exit {rc}, stderr lines: {lines[:6]}"
    if case.names not in lines[0]:
        return "messy", f"error line does not name {case.names!r}: {lines[0]}"
    return "clean", lines[0]
