"""Reading a DICOM series to an HU volume: meddx.io.read_image vs SimpleITK vs plain pydicom.

The real 129-slice abdominal CT (`dicom/ct_abdomen_ircadb`, files not in slice order by name).
- meddx:     `read_image(folder).array`;
- SimpleITK: `ImageSeriesReader` with `GetGDCMSeriesFileNames` (sorts by position, applies
             rescale) + `GetArrayFromImage`;
- pydicom:   `dcmread` every file, sort by ImagePositionPatient along the slice normal, stack,
             apply RescaleSlope/Intercept (float32).
The readers run interleaved (round-robin) after one warm-up each (so the OS file cache is warm
for all three); median of the timed runs. The volumes are checked to agree voxel for voxel.

Run:  python benchmarks/reading.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_info, median, parser, percentile, print_header, table, write_results  # noqa: E402,E501


def read_meddx(folder: Path) -> np.ndarray:
    from meddx.io import read_image

    return np.asarray(read_image(folder).array)


def read_sitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_pydicom(folder: Path) -> np.ndarray:
    import pydicom

    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float))))
    vol = np.stack([d.pixel_array for d in dss]).astype(np.float32)
    slope = np.array([float(getattr(d, "RescaleSlope", 1)) for d in dss], np.float32)[:, None, None]
    inter = np.array([float(getattr(d, "RescaleIntercept", 0)) for d in dss], np.float32)[:, None, None]
    return vol * slope + inter


READERS: dict[str, Callable[[Path], np.ndarray]] = {
    "meddx read_image": read_meddx, "SimpleITK ImageSeriesReader": read_sitk, "pydicom (dcmread+sort+stack)": read_pydicom,
}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    info = machine_info()
    print_header("DICOM series reading (129-slice CT -> HU volume)", info)
    folder = SHARED_DATA / "dicom" / "ct_abdomen_ircadb"
    if not folder.is_dir():
        print(f"skipped: {folder} absent")
        write_results(args, "reading", info, {"skipped": str(folder)}, {})
        return 0
    runs = 2 if args.quick else 7
    vols: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {k: [] for k in READERS}
    first: dict[str, float] = {}
    for name, fn in READERS.items():  # warm-up (first import, cold-ish cache)
        t = time.perf_counter()
        vols[name] = fn(folder)
        first[name] = time.perf_counter() - t
    for _ in range(runs):
        for name, fn in READERS.items():
            t = time.perf_counter()
            fn(folder)
            times[name].append(time.perf_counter() - t)
    ref = vols["SimpleITK ImageSeriesReader"].astype(np.float32)
    sitk_med = median(times["SimpleITK ImageSeriesReader"])
    rows: list[dict[str, Any]] = []
    for name in READERS:
        v = vols[name]
        agree = v.shape == ref.shape and float(np.max(np.abs(v.astype(np.float32) - ref))) == 0.0
        rows.append({"reader": name, "median_s": median(times[name]), "p95_s": percentile(times[name], 95),
                     "first_s": first[name], "vs_SimpleITK": median(times[name]) / sitk_med,
                     "runs": runs, "shape": "x".join(map(str, v.shape)), "dtype": str(v.dtype),
                     "equal_to_SimpleITK": agree, "times_s": [round(t, 4) for t in times[name]]})
    cols = ["reader", "median_s", "p95_s", "first_s", "vs_SimpleITK", "runs", "shape", "dtype", "equal_to_SimpleITK"]
    text = table(rows, cols)
    print(f"\n{len(list(folder.iterdir()))} files; median of {runs} interleaved runs after a warm-up; "
          f"target meddx/SimpleITK <= 1.2")
    print(text)
    write_results(args, "reading", info, {"folder": str(folder), "rows": rows,
                                          "ratio_meddx_sitk": rows[0]["vs_SimpleITK"]}, {"reading": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
