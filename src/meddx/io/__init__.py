"""Reading and writing images: every format becomes one `Image` value keeping geometry."""

from meddx.io.image import Image
from meddx.io.readers import read_image

__all__ = ["Image", "read_image"]
