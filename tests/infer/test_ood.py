"""The OOD gate: degenerate inputs refused with one clear line, in- and out-of-distribution verdicts, old RUNs
without a fingerprint, and the report of a real CT series by the demo model (no diagnosis unless --allow-ood)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from meddx.errors import InputError
from meddx.io.image import Image

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
DEMO = RUNS / "demo_cls"


@pytest.fixture(scope="module")
def demo():
    from meddx.infer import load

    return load(DEMO, heatmaps=False)


@pytest.fixture(scope="module")
def demo_slices(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Fresh synthetic slices like the demo RUN's training data (other seed: not its training cases)."""
    from meddx.data.synthetic import write_synthetic_folder

    manifest = write_synthetic_folder(tmp_path_factory.mktemp("demo"), n=12, size=64, seed=7)
    return sorted(p for p in manifest.parent.glob("*/*.png") if not p.name.endswith("_mask.png"))


def _png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image as PILImage

    PILImage.fromarray(arr).save(path)
    return path


def _degenerate_files(tmp: Path) -> dict[str, Path]:
    import nibabel as nib

    one_voxel = tmp / "one_voxel.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((1, 1, 1), np.float32), np.eye(4)), one_voxel)
    ramp = np.tile(np.arange(5000) % 256, (1, 1)).astype(np.uint8)
    return {"1x1 png": _png(tmp / "dot.png", np.full((1, 1), 200, np.uint8)),
            "1x5000 png": _png(tmp / "line.png", ramp),
            "one-voxel nifti": one_voxel,
            "constant png": _png(tmp / "flat.png", np.full((64, 64), 17, np.uint8))}


@pytest.mark.parametrize("case, words", [("1x1 png", "too small"), ("1x5000 png", "too small"),
                                         ("one-voxel nifti", "too small"), ("constant png", "constant image")])
def test_degenerate_inputs_get_one_clear_line(case: str, words: str, tmp_path: Path, capsys) -> None:
    from meddx.cli import main

    f = _degenerate_files(tmp_path)[case]
    rc = main(["predict", str(DEMO), str(f), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("meddx: error: ") and words in err[0], err
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_degenerate_arrays_through_the_python_api(demo) -> None:
    with pytest.raises(InputError, match="too small"):
        demo.predict(Image(np.ones((1, 5000), np.float32)))
    with pytest.raises(InputError, match="aspect ratio"):
        demo.predict(Image(np.random.default_rng(0).random((10, 400)).astype(np.float32)))
    with pytest.raises(InputError, match="constant"):
        demo.predict_batch([Image(np.zeros((64, 64), np.float32))])
    with pytest.raises(InputError, match="NaN"):
        demo.predict(Image(np.full((64, 64), np.nan, np.float32)))
    with pytest.raises(InputError, match="3D volumes"):
        from meddx.infer.ood import check_degenerate

        check_degenerate(Image(np.random.default_rng(0).random((32, 32))), model_ndim=3)


def test_in_distribution_slices_pass_and_carry_calibrated_sets(demo, demo_slices) -> None:
    from meddx.io import read_image

    preds = demo.predict_batch([read_image(p) for p in demo_slices])
    verdicts = [p.in_distribution for p in preds]
    assert sum(verdicts) >= len(verdicts) - 1, [p.ood_reason for p in preds]
    for p in preds:
        assert 0 <= p.ood_score
        assert p.prediction_set and set(p.prediction_set) <= set(demo.class_names)
        assert abs(sum(p.calibrated_probabilities.values()) - 1) < 1e-6
    one = demo.predict(read_image(demo_slices[0]))  # one at a time gives the same as the batch
    assert one.ood_score == pytest.approx(preds[0].ood_score, rel=1e-4)
    assert one.probability == pytest.approx(preds[0].probability, abs=1e-6)


def test_other_images_are_out_of_distribution_with_a_reason(demo, demo_slices) -> None:
    from meddx.io import read_image

    base = read_image(demo_slices[0]).array.astype(np.float32)
    inverted = Image(base.max() - base)
    noise = Image(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    colour = Image(np.random.default_rng(1).integers(0, 255, (64, 64, 3)).astype(np.uint8), has_channels=True)
    for img in (noise, colour):
        p = demo.predict(img)
        assert p.in_distribution is False and p.ood_reason
    assert "colour" in demo.predict(colour).ood_reason
    huge = Image(np.random.default_rng(2).random((1024, 1024)).astype(np.float32) * 60000, modality="CT",
                 has_geometry=True, spacing=(0.5, 0.5))
    reason = demo.predict(huge).ood_reason
    assert "CT" in reason and "px" in reason and "intensities" in reason
    assert demo.predict(inverted).ood_score > demo.predict(Image(base)).ood_score


def test_a_run_without_fingerprint_still_predicts_with_unknown_verdict() -> None:
    from meddx.infer import load
    from meddx.infer.ood import NO_FINGERPRINT

    p = load(RUNS / "breast_cls", heatmaps=False)
    pred = p.predict(Image(np.random.default_rng(0).integers(0, 255, (28, 28)).astype(np.uint8)))
    assert pred.in_distribution is None and pred.ood_score is None and pred.ood_reason == NO_FINGERPRINT
    assert pred.prediction_set is None and pred.calibrated_probabilities is None
    assert 0 <= pred.probability <= 1


def test_gate_columns_withhold_the_diagnosis_unless_allowed(demo) -> None:
    from meddx.infer.ood import gate_columns

    pred = demo.predict(Image(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)))
    assert pred.in_distribution is False
    cols = gate_columns(pred)
    assert cols["predicted"].startswith("out of distribution: ") and cols.get("withheld") is True
    assert cols["prediction_set"] == "" and cols["in_distribution"] is False
    allowed = gate_columns(pred, allow_ood=True)
    assert "predicted" not in allowed and allowed["prediction_set"]


def _text(html: Path) -> str:
    t = re.sub(r"<style.*?</style>", " ", html.read_text(), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", t).split())


@pytest.mark.slow
def test_demo_model_refuses_to_diagnose_a_real_ct_series(shared_data: Path, tmp_path: Path) -> None:
    """Acceptance (issue 19): the 64 px synthetic-slice model says the abdominal CT is outside its training
    distribution and gives no diagnosis, unless --allow-ood."""
    from meddx.cli import main

    ct = shared_data / "dicom" / "ct_abdomen_ircadb"
    if not ct.is_dir():
        pytest.skip(f"real data {ct} is absent")
    assert main(["report", str(DEMO), str(ct), "--out", str(tmp_path / "r"), "--no-dicom"]) == 0
    text = _text(tmp_path / "r" / "report.html")
    assert text.find("Out of distribution") < text.find("Finding")
    assert "No diagnosis" in text and "a CT study" in text
    assert "Predicted:" not in text and "High confidence" not in text and "Probability" not in text
    assert main(["report", str(DEMO), str(ct), "--out", str(tmp_path / "a"), "--no-dicom", "--allow-ood"]) == 0
    allowed = _text(tmp_path / "a" / "report.html")
    assert "Out of distribution" in allowed and "not a reliable diagnosis" in allowed and "Predicted:" in allowed


def test_calibration_metrics_and_coverage_option(demo) -> None:
    """metrics.json's calibration / conformal sections; a higher --coverage never gives smaller sets."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.25, 400), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], axis=1)
    m = demo.calibration_metrics(y, probs)
    assert set(m["calibration"]) >= {"temperature", "ece_before", "ece_after"}
    assert {"target", "coverage", "mean_set_size"} <= set(m["conformal"]) and m["conformal"]["target"] == 0.9
    sizes = []
    for c in (0.5, 0.9, 0.99):
        demo.set_coverage(c)
        sizes.append(demo.calibration_metrics(y, probs)["conformal"]["mean_set_size"])
    demo.set_coverage(0.9)
    assert sizes == sorted(sizes)
    from meddx.errors import ConfigError

    with pytest.raises(ConfigError):
        demo.set_coverage(1.5)


def test_report_batch_withholds_the_ood_study_only(demo, demo_slices, tmp_path: Path) -> None:
    from meddx.io import read_image
    from meddx.report import render_batch

    inside = demo.predict(read_image(demo_slices[0])).to_study("a")
    outside = demo.predict(Image(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))).to_study("b")
    for s in (inside, outside):
        s["diagnosis_withheld"] = s["in_distribution"] is False
    assert outside["diagnosis_withheld"] and not inside["diagnosis_withheld"]
    res = render_batch([inside, outside], demo.info.to_dict(), tmp_path)
    rows = re.findall(r"<tr>(.*?)</tr>", Path(res["index"]).read_text())
    assert "(withheld)" in rows[2] and "out of distribution" in rows[2] and not re.search(r"\d\.\d{3}", rows[2])
    assert re.search(r"\d\.\d{3}", rows[1]) and "(withheld)" not in rows[1]
    text = _text(Path(res["reports"][1]["html"]))
    assert "No diagnosis" in text and "Predicted:" not in text and "Heatmap overlay" not in text


def test_predictions_csv_says_out_of_distribution_unless_allowed(demo_slices, tmp_path: Path) -> None:
    import csv

    from meddx.cli import main

    noise = _png(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    inside = str(demo_slices[0])
    assert main(["predict", str(DEMO), inside, str(noise), "--out", str(tmp_path / "p")]) == 0
    rows = list(csv.DictReader((tmp_path / "p" / "predictions.csv").open()))
    assert rows[0]["in_distribution"] == "True" and rows[0]["probability"] and rows[0]["prediction_set"]
    assert rows[1]["predicted"].startswith("out of distribution: ") and rows[1]["in_distribution"] == "False"
    assert rows[1]["probability"] == "" and all(rows[1][k] == "" for k in rows[1] if k.startswith("p_"))
    assert main(["predict", str(DEMO), str(noise), "--out", str(tmp_path / "a"), "--allow-ood"]) == 0
    allowed = list(csv.DictReader((tmp_path / "a" / "predictions.csv").open()))[0]
    assert allowed["predicted"] in ("lesion", "normal") and float(allowed["probability"]) > 0
    assert allowed["in_distribution"] == "False" and float(allowed["ood_score"]) > 1


def test_high_confidence_only_when_the_conformal_set_agrees() -> None:
    from meddx.report.study import agree_with_set

    high = "High confidence: the probability is 0.40 from the operating threshold 0.50."
    agree = {"predicted": "pneumonia", "prediction_set": ["pneumonia"], "coverage": 0.9,
             "calibrated_probabilities": {"pneumonia": 0.95, "normal": 0.05}}
    assert agree_with_set("high", high, agree) == ("high", high)
    level, text = agree_with_set("high", high, {**agree, "prediction_set": ["pneumonia", "normal"]})
    assert level == "moderate" and text.startswith("Moderate confidence") and "pneumonia or normal" in text
    level, _ = agree_with_set("high", high, {**agree, "calibrated_probabilities": {"pneumonia": 0.7}})
    assert level == "moderate"
    assert agree_with_set("high", high, {"predicted": "x"}) == ("high", high)  # uncalibrated RUN: unchanged


def test_segmenters_refuse_degenerate_inputs_too(tmp_path: Path, capsys) -> None:
    from meddx.cli import main

    for case, f in _degenerate_files(tmp_path).items():
        rc = main(["predict", str(RUNS / "demo_seg"), str(f), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("meddx: error: "), (case, err)
