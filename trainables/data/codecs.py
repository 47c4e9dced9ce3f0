"""Decoding and resizing images to the one square uint8 load size every dataset yields.

``pil_to_uint8`` / ``decode_image`` / ``load_image_file``: any PIL image -> uint8 ``3 x S x S``,
gray replicated to RGB, squashed to the square with antialiased bilinear interpolation and never
cropped (LeOCLR's query view is the whole, uncropped image). ``resize_uint8`` does the same for a
uint8 batch with torchvision's kernel (identical results); ``encode_png`` is the lossless inverse
used by the Parquet writer.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from trainables.data.errors import DatasetError

#: File name extensions read as images (those torchvision's ImageFolder accepts).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def resize_uint8(images: torch.Tensor, size: int, *, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 batch to a square with antialiased bilinear interpolation, no crop.

    images: N x 3 x H x W uint8 (any layout) -> N x 3 x size x size uint8, contiguous.
    Works in chunks of ``chunk`` images so a 100k-image set never needs a float copy.
    """
    from torchvision.transforms.v2 import functional as TF

    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images.contiguous()
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        out[start:start + chunk] = TF.resize(
            images[start:start + chunk].contiguous(), [size, size], antialias=True
        )
    return out


def pil_to_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """PIL image (any mode) -> uint8 3 x size x size: RGB (gray replicated), squashed, no crop."""
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)  # PIL's bilinear is antialiased
    if img.mode == "L":
        img = img.convert("RGB")
    # HWC -> CHW in numpy: a per-image torch op would run on the process's OpenMP team, which
    # stalls at every op when other processes hold the cores
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def decode_image(data: bytes, size: int, *, source: str) -> torch.Tensor:
    """Encoded image bytes (PNG, JPEG, ...) -> uint8 3 x size x size.

    ``source`` names where the bytes came from (a file, or file + row); it is put in the
    ``DatasetError`` raised when the bytes do not decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return pil_to_uint8(img, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = f"{exc}; delete or replace that file/row"
        raise DatasetError(reason, source=source,
                           message=f"cannot decode the image in {source}: {reason}") from exc


def load_image_file(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read and decode one image file -> uint8 3 x size x size; errors name the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_uint8(img, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = f"{exc}; delete or replace that file"
        raise DatasetError(reason, source=os.fspath(path),
                           message=f"cannot read the image file {os.fspath(path)}: {reason}") from exc


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 3 x H x W -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
