"""The report PDF (reportlab, from the same blocks as the HTML) rendered and read back with poppler: one page for a
one-image study with the tables and the key image on it, every figure on the same page as its caption, volumes and
sequences render, the out-of-distribution verdict and the prediction set at the top, no patient identifiers."""

from __future__ import annotations

import html as _html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from meddx.errors import ConfigError
from meddx.io.image import Image
from meddx.report import render_study_report

from .conftest import gaussian_blob, phi_strings, run_info

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("pdftoppm", "pdftotext", "pdfimages", "pdfinfo")),
                                reason="poppler-utils (pdftoppm, pdftotext, pdfimages, pdfinfo) not installed")


def _run(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def n_pages(pdf: Path) -> int:
    return int(re.search(r"^Pages:\s+(\d+)", _run("pdfinfo", str(pdf)), re.M).group(1))


def page_text(pdf: Path, page: int, layout: bool = True) -> str:
    return _run("pdftotext", *(["-layout"] if layout else []), "-f", str(page), "-l", str(page), str(pdf), "-")


def images_per_page(pdf: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in _run("pdfimages", "-list", str(pdf)).splitlines()[2:]:
        page = int(line.split()[0])
        out[page] = out.get(page, 0) + 1
    return out


def render_page(pdf: Path, page: int, tmp: Path, dpi: int = 50) -> np.ndarray:
    from PIL import Image as PILImage

    stem = tmp / f"p{page}"
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile", str(pdf),
                    str(stem)], check=True)
    return np.asarray(PILImage.open(f"{stem}.png").convert("RGB")).astype(np.int16)


def word_box(pdf: Path, page: int, word: str) -> tuple[float, float, float, float]:
    """(xMin, yMin, xMax, yMax) in points of the first occurrence of `word` on the page."""
    box = _run("pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(pdf), "-")
    m = re.search(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">' + re.escape(word) + "<",
                  box)
    assert m, f"{word!r} not on page {page}"
    return tuple(float(v) for v in m.groups())  # type: ignore[return-value]


def captions(html_path: Path) -> list[str]:
    return [_html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", html_path.read_text())]


def assert_figures_with_captions(pdf: Path, html_path: Path) -> None:
    """On every page, as many images as captions: no figure is separated from its caption by a page break."""
    prefixes = [" ".join(c.split()) for c in captions(html_path)]
    assert prefixes
    per_page = images_per_page(pdf)
    found = 0
    for page in range(1, n_pages(pdf) + 1):
        text = " ".join(page_text(pdf, page, layout=False).split())
        n_caps = sum(text.count(p) for p in dict.fromkeys(prefixes))
        assert n_caps == per_page.get(page, 0), (page, n_caps, per_page)
        found += n_caps
    assert found == len(prefixes)


def test_single_image_study_is_one_page_with_tables_and_key_image(small_study, small_dcm, tmp_path):
    import pydicom

    paths = render_study_report(small_study, run_info("abnormal", 0.5), tmp_path / "r")
    pdf = paths["pdf"]
    assert paths["pdf_engine"] == "reportlab" and pdf.read_bytes()[:5] == b"%PDF-"
    assert n_pages(pdf) == 1
    text = page_text(pdf, 1)
    # every section of the HTML, in the same order
    order = ["Diagnostic decision-support report", "Study", "Finding", "Key images", "Candidate lesions",
             "Model card", "Use of this report"]
    pos = [text.find(h) for h in order]
    assert -1 not in pos and pos == sorted(pos), pos
    # table cells: the class/probability rows are table rows (name and value on one line), header cells present
    assert re.search(r"normal\s+0\.550", text) and re.search(r"abnormal\s+0\.450", text)
    assert re.search(r"Modality\s+CT", text) and "Predicted: normal (probability 0.550)" in text
    assert re.search(r"#\s+Location\s+Size \(mm\)\s+Area \(mm²\)\s+Peak relevance", text)
    assert "0.913 (0.850–0.960)" in text and "Borderline, review carefully" in text
    # the key image is on page 1, above its caption, and holds picture content (grey CT and the heatmap colours)
    assert images_per_page(pdf) == {1: 1}
    _, cap_top, _, _ = word_box(pdf, 1, "Heatmap")
    _, title_bottom, _, _ = word_box(pdf, 1, "Key")
    page = render_page(pdf, 1, tmp_path)
    scale = page.shape[0] / 841.89  # A4 height in points
    area = page[int(title_bottom * scale) + 3:int(cap_top * scale) - 1]
    assert area.shape[0] > 80, "the key image area is too small"
    assert area.std() > 30, "the key image area looks blank"
    saturation = area.max(axis=-1) - area.min(axis=-1)
    assert (saturation > 100).mean() > 0.002, "no heatmap colours in the key image area"
    assert_figures_with_captions(pdf, paths["html"])
    # no identifiers: the PDF text and its metadata carry no patient name/ID/birth date nor the input file name
    everything = _run("pdftotext", str(pdf), "-") + _run("pdfinfo", str(pdf))
    for value in phi_strings(pydicom.dcmread(small_dcm, stop_before_pixels=True)) + [small_dcm.name, small_dcm.stem]:
        assert value not in everything, value


def test_out_of_distribution_and_prediction_set_at_the_top(small_study, tmp_path):
    study = dict(small_study, in_distribution=False, ood_reason="image size 128 x 128 far from training 64 x 64",
                 prediction_set=["normal", "abnormal"], coverage=0.9)
    pdf = render_study_report(study, run_info("abnormal", 0.5), tmp_path / "o")["pdf"]
    text = " ".join(page_text(pdf, 1, layout=False).split())
    ood = text.find("Out of distribution")
    assert 0 <= ood < text.find("Decision support only") and ood < text.find("Finding")
    assert "far from training 64 x 64" in text and "not a reliable diagnosis" in text
    assert "Prediction set (90% coverage): normal or abnormal: the model cannot separate these here" in text
    assert n_pages(pdf) == 1
    # without --allow-ood the diagnosis is withheld: the verdict on top, no finding, still one page
    withheld = render_study_report(dict(study, diagnosis_withheld=True), run_info("abnormal", 0.5), tmp_path / "w")
    text = " ".join(page_text(withheld["pdf"], 1, layout=False).split())
    assert text.find("Out of distribution") < text.find("No diagnosis: this input is outside")
    assert "Predicted:" not in text and "Prediction set" not in text and n_pages(withheld["pdf"]) == 1
    # control: a study in distribution says nothing of the kind
    plain = render_study_report(dict(small_study, in_distribution=True), run_info("abnormal", 0.5), tmp_path / "i")
    assert "Out of distribution" not in page_text(plain["pdf"], 1)


def _volume_study() -> dict:
    from meddx.explain import heatmap_to_lesions
    from meddx.infer.prediction import Prediction

    vol = np.random.default_rng(1).normal(0, 1, (12, 48, 48)).astype(np.float32)
    image = Image(vol, spatial_ndim=3, source="vol.nii.gz")
    heat = gaussian_blob(vol.shape, (6, 24, 24), (1.5, 5, 5)).astype(np.float32)
    scores = [0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.6, 0.4, 0.2, 0.1, 0.1]
    pred = Prediction(probabilities={"normal": 0.1, "lesion": 0.9}, label="lesion", probability=0.9, threshold=0.42,
                      image=image, display=(vol - vol.min()) / np.ptp(vol), positive_class="lesion", heatmap=heat,
                      lesions=heatmap_to_lesions(heat, 0.5, spacing=image.spacing), slice_scores=scores,
                      key_slices=[6, 5, 7, 4, 8])
    return pred.to_study("vol.nii.gz")


def test_volume_study_many_figures_never_split(tmp_path):
    paths = render_study_report(_volume_study(), run_info(), tmp_path / "v", n_key_images=5)
    pdf = paths["pdf"]
    n = n_pages(pdf)
    assert n >= 2  # 5 key slices, the orthogonal views and the per-slice chart do not fit one page
    assert sum(images_per_page(pdf).values()) == len(paths["images"]) == 7
    assert_figures_with_captions(pdf, paths["html"])
    text = page_text(pdf, 1)
    assert "Key slice 6 (P=0.90)" in " ".join(text.split()) and re.search(r"Modality\s+\S+", text)
    # a section heading and its lead-in stay on the page of the figure they introduce
    pages = [" ".join(page_text(pdf, k, layout=False).split()) for k in range(1, n + 1)]
    for heading, caption in (("Slices that drove the decision", "Per-slice probability (dashed line"),
                             ("Key images", "Key slice 6 (P=0.90)")):
        assert [heading in t for t in pages] == [caption in t for t in pages], (heading, caption)
    for page in range(1, n + 1):
        assert render_page(pdf, page, tmp_path).std() > 5, f"page {page} is blank"


def test_sequence_study_has_frame_importance_plot(tmp_path):
    from .test_sequence_report import _sequence_study

    info = dict(run_info("present", 0.45), model="lstm", class_names=["absent", "present"])
    paths = render_study_report(_sequence_study(), info, tmp_path / "s")
    pdf = paths["pdf"]
    text = " ".join(_run("pdftotext", str(pdf), "-").split())
    assert "Frame importance" in text and "Frame importance: weight per input frame" in text
    for z, w in ((4, 0.4), (6, 0.25), (8, 0.12)):
        assert f"Key frame {z} (importance {w:.3f})" in text
    assert sum(images_per_page(pdf).values()) == 4  # 3 key frames + the importance chart
    assert_figures_with_captions(pdf, paths["html"])
    assert "clip.mp4" not in text and "clip" not in _run("pdfinfo", str(pdf))


def test_unknown_pdf_engine_is_a_clear_error(small_study, tmp_path):
    with pytest.raises(ConfigError, match="unknown PDF engine"):
        render_study_report(small_study, run_info("abnormal", 0.5), tmp_path / "x", pdf_engine="latex")


def test_heading_and_lead_in_never_left_apart_from_their_figure(tmp_path):
    """Wherever the page break falls, a heading and its lead-in paragraph share the page of the figure after them."""
    from PIL import Image as PILImage

    from meddx.report.document import Doc
    from meddx.report.pdf import write_pdf_reportlab

    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(tmp_path / "fig.png")
    for filler in range(36, 60, 2):  # push the section across the page boundary in small steps
        doc = Doc(title="t")
        for k in range(filler):
            doc.p(f"filler line {k}")
        doc.h("Section heading")
        doc.p("Lead-in sentence for the figure.")
        doc.img("fig.png", "Figure caption text.")
        pdf = write_pdf_reportlab(doc, tmp_path, tmp_path / f"f{filler}.pdf")
        pages = [" ".join(page_text(pdf, k, layout=False).split()) for k in range(1, n_pages(pdf) + 1)]
        where = [("Section heading" in t, "Lead-in sentence" in t, "Figure caption text." in t) for t in pages]
        assert all(len(set(w)) == 1 for w in where), (filler, where)
        assert images_per_page(pdf) == {pages.index(next(t for t in pages if "Figure caption" in t)) + 1: 1}
