"""`meddx predict --engine ray`: same predictions as --engine local on every input kind, restartable by shard,
failing studies as error rows. One local Ray (num_cpus=2) for the whole module."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[2]
DEMO_CLS = REPO / "tests" / "fixtures" / "runs" / "demo_cls"
pytestmark = pytest.mark.slow  # one Ray start and three prediction jobs: ~1-2 min on 2 cores


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    from meddx.app.ray_engine import ray_session

    with ray_session(None, num_cpus=2):
        yield


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """(the studies both engines predict, the same plus a corrupt PNG last): synthetic demo slices, the CT
    series, a NIfTI volume and an ultrasound video."""
    from meddx.data.synthetic import write_synthetic_folder

    from tests.conftest import require

    root = tmp_path_factory.mktemp("studies")
    demo = write_synthetic_folder(root / "demo", n=18, size=64, seed=3)
    with demo.open(newline="") as fh:
        demo_paths = [f"demo/{r['path']}" for r in csv.DictReader(fh)]
    ct = require(shared_data / "dicom" / "ct_abdomen_ircadb")
    nii = require(shared_data / "nifti" / "nifti" / "brain2_image.nii.gz")
    video = require(shared_data / "pocus" / "convex" / "Pneu_Pneumonia-LITFL-Ultrasound_crop.mp4")
    paths = demo_paths[:9] + [str(ct), str(nii)] + demo_paths[9:] + [str(video)]
    good = root / "studies.csv"
    good.write_text("path\n" + "".join(f"{p}\n" for p in paths))
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with_bad = root / "studies_bad.csv"
    with_bad.write_text(good.read_text() + "bad.png\n")
    return good, with_bad


@pytest.fixture()
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of 4 studies, one group per shard: several shards from a few studies."""
    from meddx.app import predict, ray_engine

    monkeypatch.setattr(predict, "BATCH", 4)
    monkeypatch.setattr(ray_engine, "SHARD_GROUPS", 1)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _same_predictions(local: list[dict[str, str]], ray: list[dict[str, str]]) -> None:
    assert [r["input"] for r in ray] == [r["input"] for r in local]
    assert list(ray[0]) == list(local[0])
    for a, b in zip(local, ray):
        for k in a:
            if (k == "probability" or k.startswith("p_")) and a[k] != "":
                assert abs(float(a[k]) - float(b[k])) <= 1.01e-6, (a["input"], k, a[k], b[k])
            else:
                assert a[k] == b[k], (a["input"], k)


def test_ray_matches_local_and_restarts_only_missing_shards(ray_cluster: None, manifests: tuple[Path, Path],
                                                            small_shards: None, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    good, with_bad = manifests
    assert main(["predict", str(DEMO_CLS), "--manifest", str(good), "--out", str(tmp_path / "local"),
                 "--allow-ood"]) == 0
    local = _rows(tmp_path / "local" / "predictions.csv")
    assert len(local) == 21 and {r["n_slices"] for r in local} > {"1"}  # volumes and the video read as stacks

    out = tmp_path / "ray"
    assert main(["predict", str(DEMO_CLS), "--manifest", str(with_bad), "--engine", "ray", "--out", str(out),
                 "--allow-ood"]) == 0
    ray = _rows(out / "predictions.csv")
    assert len(ray) == 22 and ray[-1]["input"] == "study_022" and ray[-1]["error"]
    assert all(not r["error"] for r in ray[:-1])
    _same_predictions(local, [{k: v for k, v in r.items() if k != "error"} for r in ray[:-1]])
    printed = capsys.readouterr()
    assert "study_022: error: cannot read image" in printed.out and "Traceback" not in printed.err

    shards = sorted((out / "shards").glob("shard_*.parquet"))
    assert len(shards) == 6  # 22 studies, 4 per shard
    deleted, kept = shards[::2], shards[1::2]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    for p in deleted:
        p.unlink()
    before = (out / "predictions.csv").read_text()
    assert main(["predict", str(DEMO_CLS), "--manifest", str(with_bad), "--engine", "ray", "--out", str(out),
                 "--allow-ood"]) == 0
    assert "3 already done, 3 to predict" in capsys.readouterr().out
    assert all(p.is_file() for p in deleted)
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps  # untouched: only the deleted shards were recomputed
    assert (out / "predictions.csv").read_text() == before


def test_shards_hold_typed_columns_and_refuse_another_job(ray_cluster: None, tmp_path: Path,
                                                          small_shards: None) -> None:
    """predict_files_ray (the benchmarks' entry point) on 6 PNGs with 2 actors; a different study list in the
    same DIR is refused rather than mixed with old shards."""
    import pyarrow.parquet as pq
    from PIL import Image

    from meddx.app.ray_engine import predict_files_ray
    from meddx.errors import ConfigError

    files = []
    for i in range(6):
        files.append(tmp_path / f"i{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64), dtype=np.uint8)).save(files[-1])
    csv_path = predict_files_ray(DEMO_CLS, files, tmp_path / "o", actors=2)
    rows = _rows(csv_path)
    table = pq.read_table(tmp_path / "o" / "shards" / "shard_000000.parquet")
    assert table.column_names[:5] == ["index", "input", "predicted", "probability", "error"]
    assert table.column("probability").to_pylist() == [float(r["probability"]) if r["probability"] else None
                                                      for r in rows[:4]]
    with pytest.raises(ConfigError, match="different prediction job"):
        predict_files_ray(DEMO_CLS, files[:3], tmp_path / "o", actors=1)
