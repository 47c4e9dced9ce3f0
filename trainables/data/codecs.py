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
import re

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


def open_image(file: str | os.PathLike | bytes, *, source: str, from_file: bool | None = None) -> Image.Image:
    """Decode one image, a file path or encoded bytes (PNG, JPEG, ...), at its own size ->
    a loaded PIL image in its own mode.

    ``source`` names where it came from (a file, or file + row); a file or bytes that do not
    decode raise ``DatasetError`` naming it. ``from_file``: the bytes were read from the file
    ``source`` (the message then names the file, not a row); default: whether ``file`` is a path.
    """
    try:
        with Image.open(io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else file) as img:
            img.load()
            return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # PIL names in-memory bytes by their object repr ("<_io.BytesIO object at 0x...>"): noise
        detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip()
        if from_file is None:
            from_file = not isinstance(file, (bytes, bytearray))
        if from_file:
            reason = f"{detail}; delete or replace that file"
            message = f"cannot read the image file {source}: {reason}"
        else:
            reason = f"{detail}; delete or replace that file/row"
            message = f"cannot decode the image in {source}: {reason}"
        raise DatasetError(reason, source=source, message=message) from exc


def decode_full(data: bytes, *, source: str, from_file: bool = False) -> torch.Tensor:
    """Encoded image bytes -> uint8 ``3 x H x W`` at the image's own size (gray replicated, alpha
    dropped): torchvision's decoders (libjpeg-turbo, libpng, ...) straight into a CHW tensor;
    formats they do not read (BMP, TIFF, PPM, ...) go through PIL. Errors name ``source``."""
    from torchvision.io import ImageReadMode, decode_image as tv_decode

    try:
        return tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        img = open_image(data, source=source, from_file=from_file)
        img = img if img.mode == "RGB" else img.convert("RGB")
        return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file; an unreadable file raises ``DatasetError`` naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        reason = f"{exc.strerror or exc}; delete or replace that file"
        raise DatasetError(reason, source=os.fspath(path),
                           message=f"cannot read the image file {os.fspath(path)}: {reason}") from exc


def decode_image(data: bytes, size: int, *, source: str) -> torch.Tensor:
    """Encoded image bytes (PNG, JPEG, ...) -> uint8 3 x size x size (``source``: see
    ``open_image``)."""
    return pil_to_uint8(open_image(data, source=source), size)


def load_image_file(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read and decode one image file -> uint8 3 x size x size; errors name the file."""
    return pil_to_uint8(open_image(path, source=os.fspath(path)), size)


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 3 x H x W -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
