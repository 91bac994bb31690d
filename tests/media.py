"""Video and animated-GIF writers the tests make their clips with (PyAV and Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: Path, frames: list[np.ndarray], codec: str = "libx264", fps: int = 10,
                fmt: str | None = None, options: dict | None = None) -> Path:
    """RGB frames (H, W, 3) uint8 as a video (libx264, else mpeg4 where this PyAV lacks it)."""
    import av

    if codec not in av.codecs_available:
        codec = "mpeg4"
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: Path, frames: list[np.ndarray]) -> Path:
    """Frames as an animated GIF (80 ms per frame, looping)."""
    from PIL import Image as PILImage

    ims = [PILImage.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=80, loop=0)
    return path
