"""Reading and writing images as ``C x H x W`` float tensors in [0, 1]."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dip.errors import DipError

BUILTIN_PREFIX = "skimage:"
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _builtin(name: str) -> np.ndarray:
    from skimage import data

    loader = getattr(data, name, None)
    if loader is None or name.startswith("_"):
        raise DipError(f"unknown built-in image '{BUILTIN_PREFIX}{name}' (try skimage:astronaut or skimage:camera)")
    return loader()


def _from_pil(image: Image.Image, mode: str) -> torch.Tensor:
    image = ImageOps.exif_transpose(image)
    if mode == "auto":
        mode = "L" if image.mode in GREY_MODES or (image.mode == "P" and _palette_is_grey(image)) else "RGB"
    if image.mode in {"I", "I;16", "I;16B", "I;16L"}:
        array = np.asarray(image, dtype=np.float64) / 65535.0
        if mode == "RGB":
            array = np.repeat(array[..., None], 3, axis=-1)
    else:
        array = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
    return torch.from_numpy(np.atleast_3d(array).transpose(2, 0, 1).copy()).float()


def _palette_is_grey(image: Image.Image) -> bool:
    palette = np.asarray(image.convert("RGB"))
    return bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())


def load_image(path: str | Path | torch.Tensor, mode: str = "auto", what: str = "image") -> torch.Tensor:
    """Read an image file (or ``skimage:NAME``) as a ``C x H x W`` tensor in [0, 1].

    A tensor (``C x H x W`` or ``H x W``, values in [0, 1]) passes through, so that the Python API
    takes images already in memory.

    ``mode`` is ``auto`` (grey stays grey, everything else becomes RGB), ``L`` or ``RGB``.
    EXIF orientation is applied. Raises ``DipError`` naming the file for anything unreadable.
    """
    if isinstance(path, torch.Tensor):
        return _from_tensor(path, what)
    path_text = str(path)
    if path_text.startswith(BUILTIN_PREFIX):
        array = _builtin(path_text[len(BUILTIN_PREFIX):])
        return _from_pil(Image.fromarray(array), mode)
    file = Path(path_text).expanduser()
    if not file.is_file():
        raise DipError(f"{what} file not found: {file}")
    try:
        with Image.open(file) as image:
            image.load()
            return _from_pil(image, mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DipError(f"cannot read {what} file {file}: {error}") from None


def _from_tensor(image: torch.Tensor, what: str) -> torch.Tensor:
    image = image.detach().float().cpu()
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise DipError(f"{what} tensor must be C x H x W with C = 1 or 3, got shape {tuple(image.shape)}")
    return image.clamp(0, 1)


def to_pil(image: torch.Tensor) -> Image.Image:
    """``C x H x W`` in [0, 1] (C = 1 or 3) to an 8-bit PIL image."""
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    array = array.transpose(1, 2, 0)
    return Image.fromarray(array[..., 0], "L") if array.shape[-1] == 1 else Image.fromarray(array, "RGB")


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write a PNG atomically: a reader never sees a half-written file."""
    write_atomically(Path(path), lambda handle: to_pil(image).save(handle, format="PNG"))


def write_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def centre_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height`` x ``width`` window (no-op on a dimension already small enough)."""
    top = max(0, (image.shape[-2] - height) // 2)
    left = max(0, (image.shape[-1] - width) // 2)
    return image[..., top : top + height, left : left + width]
