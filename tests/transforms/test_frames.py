"""`sequence_input` on videos: the fast path (lazy `VideoStudy`, sampled decode, on-disk cache) feeds the model
exactly what the full decode does, and a cached study opens no video."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from meddx.io import read_image
from meddx.io.video import VideoStudy
from meddx.transforms.frames import FRAMES_CACHE, read_study, sequence_input
from meddx.transforms.preprocess import Preprocessing
from tests.media import write_gif, write_video

av = pytest.importorskip("av")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("MEDDX_CACHE", str(d))
    return d


def _frames(n: int, h: int = 40, w: int = 56, grey: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        f = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        f[:, (3 * i) % w] = 255
        f[(2 * i) % h, :, 2] = 180
        out.append(np.repeat(f[..., :1], 3, axis=-1) if grey else f)
    return out


PREPS = {"rgb32": dict(image_size=32, channels=3), "grey24": dict(image_size=24, channels=1)}


def _same(a: tuple, b: tuple) -> None:
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v)


def _no_video_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import meddx.io.video as video

    def boom(*_a, **_k):
        raise AssertionError("a video was opened")

    for name in ("_av_open", "_gif_pass", "_gif_count", "_read"):
        monkeypatch.setattr(video, name, boom)


@pytest.mark.parametrize("prep_name", sorted(PREPS))
@pytest.mark.parametrize("kind", ["mp4", "gif", "grey_gif", "short_mp4"])
def test_fast_path_equals_full_decode(tmp_path: Path, kind: str, prep_name: str) -> None:
    frames = {"mp4": _frames(45), "gif": _frames(33), "grey_gif": _frames(33, grey=True),
              "short_mp4": _frames(5)}[kind]
    path = (write_gif if "gif" in kind else write_video)(tmp_path / f"clip.{'gif' if 'gif' in kind else 'mp4'}", frames)
    prep = Preprocessing(spatial_ndim=2, intensity="minmax", **PREPS[prep_name])
    study = read_study(path)
    assert isinstance(study, VideoStudy) and not study.decoded
    full = sequence_input(read_image(path), prep, 16)
    _same(sequence_input(study, prep, 16), full)
    assert not study.decoded  # sampled, never fully decoded
    _same(sequence_input(read_study(path), prep, 16), full)  # from the cache
    _same(sequence_input(read_study(path), prep, 16, cache=False), full)
    if kind == "short_mp4":
        assert len(full[0]) == 16 and sorted(set(full[2].tolist())) == [0, 1, 2, 3, 4]  # frames repeated
    # every frame ("all" sampling): no padding, the same frames
    _same(sequence_input(read_study(path), prep, None, "all"), sequence_input(read_image(path), prep, None, "all"))


def test_cached_study_opens_no_video(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "clip.mp4", _frames(30))
    prep = Preprocessing(spatial_ndim=2, image_size=32, channels=3)
    first = sequence_input(read_study(path), prep, 8)
    assert len(list((cache_dir / FRAMES_CACHE).glob("*.npz"))) == 1
    with monkeypatch.context() as m:
        _no_video_reads(m)
        _same(sequence_input(read_study(path), prep, 8), first)
        # another frame count or preprocessing is another entry: it must decode
        with pytest.raises(AssertionError, match="a video was opened"):
            sequence_input(read_study(path), prep, 4)
        with pytest.raises(AssertionError, match="a video was opened"):
            sequence_input(read_study(path), Preprocessing(spatial_ndim=2, image_size=24, channels=3), 8)


def test_changed_file_misses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "clip.mp4", _frames(30))
    prep = Preprocessing(spatial_ndim=2, image_size=32, channels=3)
    before = sequence_input(read_study(path), prep, 8)
    write_video(path, _frames(21))  # replaced by another clip
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = sequence_input(read_study(path), prep, 8)
    _same(after, sequence_input(read_image(path), prep, 8))
    assert not np.array_equal(before[0], after[0])
    assert after[2].tolist() == [1, 3, 6, 9, 11, 14, 17, 19]  # 8 of 21 frames, not 8 of 30


def test_unwritable_cache_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("MEDDX_CACHE", str(blocker))
    path = write_video(tmp_path / "clip.mp4", _frames(12))
    prep = Preprocessing(spatial_ndim=2, image_size=16, channels=1)
    _same(sequence_input(read_study(path), prep, 4), sequence_input(read_image(path), prep, 4))


def test_bad_video_fails_when_used_naming_the_file(tmp_path: Path) -> None:
    from meddx.errors import InputError

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    study = read_study(bad)  # lazy: nothing read yet
    with pytest.raises(InputError, match="cannot read video") as err:
        sequence_input(study, Preprocessing(spatial_ndim=2, image_size=16), 4)
    assert str(err.value).startswith(f"{bad}: ")


def test_real_pocus_studies_fast_path_equals_full(shared_data: Path) -> None:
    """Model input of real clips (GIF, mp4, .mov with an edit list, MPEG-PS, avi) is unchanged by the fast path."""
    root = shared_data / "pocus" / "convex"
    names = ["Cov-Atlas-Day+1.gif", "Reg_Avi_lung-sliding.MP4", "Cov_denault_proposedUS_vid13.mov",
             "Reg_pat4Image_140606.mpeg", "Reg_northumbria_1009_vid2.avi"]
    paths = [root / n for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip("POCUS clips absent")
    prep = Preprocessing(spatial_ndim=2, image_size=64, channels=3)
    for p in paths:
        full = sequence_input(read_image(p), prep, 16)
        _same(sequence_input(read_study(p), prep, 16), full)
        _same(sequence_input(read_study(p), prep, 16), full)  # cached
