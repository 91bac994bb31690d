"""Predicting a long video: sampled decoding (what `meddx predict` / `report` do) vs decoding the whole clip first.

    python benchmarks/video_predict_decode.py RUN [VIDEO]

RUN: any sequence RUN (e.g. `meddx train ../shared/data/pocus/manifest.csv --model lstm --out RUN`); VIDEO: default
the longest clip in ../shared/data/pocus. Each mode runs in its own process (peak RSS is per process), after one
warm-up prediction on another clip, with an empty frame cache. Prints seconds and peak RSS per mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

POCUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus"

CHILD = r"""
import json, os, resource, sys, time
from meddx.infer import load
from meddx.transforms.frames import read_study
run, video, warm, mode = sys.argv[1:5]
p = load(run)
p.predict(read_study(warm))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
img = read_study(video)
if mode == "whole":
    img.array  # decode every frame first (what predict did before sampled decoding)
pred = p.predict(img)
dt = time.perf_counter() - t
print(json.dumps({"mode": mode, "seconds": round(dt, 2), "peak_rss_mib": round(resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024), "rss_before_mib": round(base), "frames": len(pred.frame_importance),
    "decoded_whole": bool(img.decoded)}))
"""


def _longest(folder: Path) -> Path:
    from meddx.io.video import VIDEO_SUFFIXES, count_frames

    clips = [p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES | {".gif"}]
    return max(clips, key=count_frames)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    run = argv[0]
    video = Path(argv[1]) if len(argv) > 1 else _longest(POCUS)
    warm = next(p for p in sorted(POCUS.rglob("*.mp4")) if p != video) if POCUS.is_dir() else video
    for mode in ("sampled", "whole"):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, MEDDX_CACHE=cache, TF_CPP_MIN_LOG_LEVEL="3")
            out = subprocess.run([sys.executable, "-c", CHILD, run, str(video), str(warm), mode], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(json.dumps({"video": video.name, **json.loads(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
