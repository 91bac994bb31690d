"""Videos and animated GIFs: sampled decoding equals the full decode, the lazy `VideoStudy`, and bad files.

Every file is generated here (PyAV / Pillow); a few real POCUS clips are compared too when ../shared/data is
there. A bad video is one `InputError` line naming the file, and `meddx: error: <file>: <problem>` with exit 2
from the CLI.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from meddx.errors import InputError
from meddx.io import read_image
from meddx.io.video import VideoStudy, count_frames, read_frames, read_frames_at
from tests.media import write_gif, write_video

av = pytest.importorskip("av")


# -- generated files ----------------------------------------------------------------------------------

def _frames(n: int, h: int = 48, w: int = 64, grey: bool = False, seed: int = 0) -> list[np.ndarray]:
    """`n` distinct RGB frames: a bar moving across noise (grey when `grey`)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        f[:, (3 * i) % w] = 255
        f[(2 * i) % h, :, 1] = 200
        out.append(np.repeat(f[..., :1], 3, axis=-1) if grey else f)
    return out


def _gif_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="GIF")
    return buf.getvalue()


def write_gif_of_two_sizes(path: Path) -> Path:
    """A 2-frame GIF whose second frame (16 x 12) is larger than the first (8 x 8) and the logical screen:
    Pillow's writer never makes one, so frame 2 of another GIF is spliced in with a local colour table."""
    a = np.zeros((8, 8, 3), np.uint8)
    a[2:4] = 255
    b = np.zeros((12, 16, 3), np.uint8)
    b[:, 5] = 255
    da, db = _gif_bytes(a), _gif_bytes(b)

    def split(data: bytes) -> tuple[bytes, bytes, bytes]:
        flags = data[10]
        gct = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
        return data[:13 + gct], data[13:13 + gct], data[13 + gct:]

    head_a, _, rest_a = split(da)
    head_b, gct_b, rest_b = split(db)
    i = rest_b.index(b"\x2c")  # image descriptor of B
    desc = bytearray(rest_b[i:i + 10])
    desc[9] = 0x80 | (head_b[10] & 7)  # local colour table = B's global one
    path.write_bytes(head_a + rest_a[:-1] + rest_b[:i] + bytes(desc) + gct_b + rest_b[i + 10:])
    return path


def _uniform(k: int):
    from meddx.data.sequences import sample_frames

    return lambda n: sample_frames(n, k)


def _same_as_full(path: Path, k: int = 16) -> None:
    full = read_frames(path)
    got = read_frames_at(path, _uniform(k))
    idx = _uniform(k)(full.shape[0])
    assert got.n_frames == full.shape[0] == count_frames(path)
    assert np.array_equal(got.indices, idx)
    assert got.frames.dtype == full.dtype and got.frames.shape == (len(idx), *full.shape[1:])
    assert np.array_equal(got.frames, full[idx])


# -- sampled decoding == full decode ------------------------------------------------------------------

@pytest.mark.parametrize("name,codec,fmt,n", [("h264.mp4", "libx264", None, 37), ("mpeg4.avi", "mpeg4", None, 23),
                                             ("h264.mov", "libx264", None, 9),
                                             ("mpeg2.mpeg", "mpeg2video", "mpeg", 41)])
def test_sampled_frames_equal_full_decode(tmp_path: Path, name: str, codec: str, fmt: str | None, n: int) -> None:
    path = write_video(tmp_path / name, _frames(n), codec=codec, fmt=fmt, fps=25 if codec == "mpeg2video" else 10)
    _same_as_full(path, 16)
    _same_as_full(path, 4)
    # explicit indices (any order, repeats) too
    full = read_frames(path)
    assert np.array_equal(read_frames_at(path, [5, 0, 5, 2]).frames, full[[5, 0, 5, 2]])


def test_sampled_gif_equals_full_decode_colour_and_grey(tmp_path: Path) -> None:
    colour = write_gif(tmp_path / "colour.gif", _frames(30, 20, 24))
    grey = write_gif(tmp_path / "grey.gif", _frames(30, 20, 24, grey=True))
    _same_as_full(colour, 16)
    _same_as_full(grey, 16)
    assert read_frames(grey).ndim == 3 and read_frames(colour).ndim == 4


def test_grey_decision_covers_unsampled_frames(tmp_path: Path) -> None:
    """A GIF grey except one frame the sampling skips is colour in the full decode: the sample must be too."""
    frames = _frames(20, 16, 16, grey=True)
    frames[1] = frames[1].copy()
    frames[1][..., 0] = 250  # colour, and not one of the 2 frames sampled below
    path = write_gif(tmp_path / "mostly_grey.gif", frames)
    assert 1 not in _uniform(2)(20)
    _same_as_full(path, 2)
    assert read_frames_at(path, _uniform(2)).frames.ndim == 4


def test_real_pocus_clips_sample_like_full_decode(shared_data: Path) -> None:
    """A GIF, an mp4 (yuv444), a .mov whose header lists 210 frames but decodes 192 (edit list), an MPEG
    program stream with no frame count, an mpeg4 .avi: the sample equals the full decode's frames."""
    root = shared_data / "pocus" / "convex"
    names = ["Cov-Atlas+(44).gif", "Pneu_Avi_Video_004.mp4", "Cov_denault_proposedUS_vid5.mov",
             "Reg_pat4Image_140238.mpeg", "Pneu_northumbria_1009_vid1.avi"]
    paths = [root / n for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip("POCUS clips absent")
    for p in paths:
        _same_as_full(p, 16)


# -- the lazy VideoStudy --------------------------------------------------------------------------------

def test_video_study_is_lazy_and_matches_read_image(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", _frames(12))
    study = VideoStudy(path)
    assert not study.decoded and study.is_sequence and study.n_frames == 12
    assert study.spatial_shape == (48, 64) and study.has_channels and study.n_channels == 3
    assert study.metadata["fps"] == pytest.approx(10) and not study.decoded
    sampled = study.sample([0, 11])
    assert not study.decoded and sampled.frames.shape == (2, 48, 64, 3)
    eager = read_image(path)
    assert np.array_equal(study.array, eager.array) and study.decoded
    copy = study.with_array(study.array[:3])
    assert type(copy).__name__ == "Image" and copy.is_sequence and copy.array.shape[0] == 3
    assert "decoded=True" in repr(study)


def test_one_frame_gif_is_a_2d_image(tmp_path: Path) -> None:
    path = write_gif(tmp_path / "still.gif", _frames(1, 10, 12, grey=True))
    study = VideoStudy(path)
    assert not study.is_sequence and study.n_frames == 1
    assert np.array_equal(study.array, read_image(path).array) and study.array.shape == (10, 12)


def test_grey_gif_has_no_channel_axis_before_decoding(tmp_path: Path) -> None:
    study = VideoStudy(write_gif(tmp_path / "g.gif", _frames(6, 10, 12, grey=True)))
    assert not study.has_channels and not study.decoded and study.n_frames == 6


# -- bad files: one line naming the file ----------------------------------------------------------------

def _undecodable(tmp: Path) -> Path:
    p = tmp / "noise.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    return p


def _zero_frames(tmp: Path) -> Path:
    """An AVI with a video stream holding no frames."""
    p = tmp / "empty.avi"
    container = av.open(str(p), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return p


def _two_sizes_mpeg(tmp: Path) -> Path:
    """Two MPEG-1 program streams of different frame sizes, back to back (a valid concatenation)."""
    a = write_video(tmp / "a.mpg", _frames(8, 48, 64), codec="mpeg1video", fmt="mpeg", fps=25)
    b = write_video(tmp / "b.mpg", _frames(8, 80, 96), codec="mpeg1video", fmt="mpeg", fps=25)
    p = tmp / "two_sizes.mpg"
    p.write_bytes(a.read_bytes() + b.read_bytes())
    return p


def _truncated_streamable(tmp: Path) -> Path:
    """An mp4 with its index first (faststart), cut short: the header promises frames the data lacks."""
    full = write_video(tmp / "full_fs.mp4", _frames(40), options={"movflags": "faststart"})
    p = tmp / "truncated_fs.mp4"
    data = full.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.7)])
    return p


def _truncated_plain(tmp: Path) -> Path:
    """An mp4 with its index (moov) at the end, cut short: no index at all."""
    full = write_video(tmp / "full.mp4", _frames(40))
    p = tmp / "truncated.mp4"
    data = full.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])
    return p


BAD = {
    "undecodable": (_undecodable, "cannot read video"),
    "zero_frames": (_zero_frames, "0 frames"),
    "gif_two_sizes": (lambda t: write_gif_of_two_sizes(t / "two_sizes.gif"), "frames of different sizes"),
    "mpeg_two_sizes": (_two_sizes_mpeg, "frames of different sizes"),
    "truncated_streamable": (_truncated_streamable, "truncated"),
    "truncated_plain": (_truncated_plain, "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_video_is_one_input_error_line(tmp_path: Path, case: str) -> None:
    make, words = BAD[case]
    path = make(tmp_path)
    readers = {
        "read_image": lambda: read_image(path),
        "read_frames_at": lambda: read_frames_at(path, _uniform(4)),
        "VideoStudy.sample": lambda: VideoStudy(path).sample(_uniform(4)),
    }
    for name, read in readers.items():
        with pytest.raises(InputError) as err:
            read()
        text = str(err.value)
        assert words in text, (name, text)
        assert text.startswith(f"{path}: ") and text.count(str(path)) == 1 and "\n" not in text, (name, text)
        assert "Errno" not in text, (name, text)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_video_on_the_command_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    make, words = BAD[case]
    path = make(tmp_path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"meddx: error: {path}: ") and words in err[0], err
