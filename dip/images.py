"""Reading and writing images as ``C x H x W`` float tensors in [0, 1]."""

from __future__ import annotations

import logging
import struct
import sys
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from dip.errors import DipError, one_line
from dip.files import write_atomically

BUILTIN_PREFIX = "skimage:"
log = logging.getLogger("dip")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _builtin(name: str) -> Image.Image:
    """scikit-image's image ``name`` (``skimage.data.NAME()``); ``DipError`` for a name that is none, one whose
    loader fails (it downloads, with ``pooch``), or a volume, stack or file name rather than one picture."""
    from skimage import data

    loader = getattr(data, name, None)
    if not callable(loader) or name.startswith("_"):
        raise DipError(f"unknown built-in image '{BUILTIN_PREFIX}{name}' (try skimage:astronaut or skimage:camera)")
    try:
        array = loader()
        if not (isinstance(array, np.ndarray) and (array.ndim == 2 or array.ndim == 3 and array.shape[2] in (3, 4))):
            given = f"an array of shape {array.shape}" if isinstance(array, np.ndarray) else f"a {type(array).__name__}"
            raise TypeError(f"it gives {given}, not one H x W or H x W x 3 picture")
        return Image.fromarray(array)
    except Exception as error:  # noqa: BLE001 (each loader's own: a missing downloader, arguments it needs)
        raise DipError(f"built-in image '{BUILTIN_PREFIX}{name}' cannot be read as an image: {one_line(error, 200)} "
                       "(try skimage:astronaut or skimage:camera)") from None


SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L"}
SWAPPED_BYTE_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}  # of a raw mode
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey + alpha, RGB, RGBA
LUMA_601 = (0.299, 0.587, 0.114)  # ITU-R 601-2: Pillow's RGB -> L weights, which a grey run's colour input gets


@dataclass
class LoadedImage:
    """An image file's pixels (``C x H x W`` in [0, 1], C = 1 or 3) and what the outputs must keep of
    it: the alpha channel (``1 x H x W``, set aside: Deep Image Prior restores colour only), the bit
    depth (8 or 16) and the file's own mode."""

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None
    bits: int = 8
    source_mode: str = "RGB"


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _low_bytes(file: Path, image: Image.Image) -> Image.Image | None:
    """For a file with 16 bits per sample that Pillow decodes to 8 bits (RGB or RGBA PNG or TIFF,
    grey + alpha PNG), the same file decoded to the low byte of each sample: RGB, RGBA, or LA for
    grey + alpha; None for any other image.

    Pillow has no 16-bit colour mode: it decodes such a file to the high bytes (grey + alpha widened
    to RGBA). Its unpacker keeps the high byte of the byte order it is told, so told the opposite
    order it keeps the low bytes of the same decoded (decompressed, unfiltered) stream. Grey + alpha
    has no unpacker of the other order, but 8-bit RGBA has the same 4 bytes per pixel: decoded so,
    each pixel is (grey high, grey low, alpha high, alpha low). ``image`` must not be loaded yet.
    """
    rawmodes = {tile.args[0] if isinstance(tile.args, tuple) else tile.args for tile in image.tile}
    if image.mode not in ("RGB", "RGBA") or len(rawmodes) != 1:
        return None
    rawmode = rawmodes.pop()
    if rawmode == "LA;16B":
        both = _decoded_as(file, "RGBA")
        return Image.merge("LA", (both.getchannel("G"), both.getchannel("A")))
    if not (isinstance(rawmode, str) and rawmode.startswith(f"{image.mode};16") and rawmode[-1] in SWAPPED_BYTE_ORDER):
        return None
    return _decoded_as(file, rawmode[:-1] + SWAPPED_BYTE_ORDER[rawmode[-1]])


def _decoded_as(file: Path, rawmode: str) -> Image.Image:
    """``file`` decoded with Pillow's unpacker for ``rawmode`` in place of its own."""
    with Image.open(file) as image:
        image.tile = [tile._replace(args=(rawmode, *tile.args[1:]) if isinstance(tile.args, tuple) else rawmode)
                      for tile in image.tile]
        image.load()
        return image


def _from_pil(image: Image.Image, mode: str) -> LoadedImage:
    image = ImageOps.exif_transpose(image)
    source_mode = image.mode
    grey = image.mode in GREY_MODES or (image.mode in ("P", "PA") and _palette_is_grey(image))
    if mode == "auto":
        mode = "L" if grey else "RGB"
    alpha = None
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        if "transparency" in image.info:  # a transparent grey level (tRNS); Pillow's LA would clip to 8 bits
            alpha = array_to_tensor((samples != image.info["transparency"]).astype(np.float64))
        if image.mode == "F" and not (np.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1):
            raise ValueError(f"its floating-point samples run from {samples.min():g} to {samples.max():g}, not "
                             f"within [0, 1]: scale them to [0, 1], or save it with 8 or 16 bits")
        if image.mode != "F" and not (samples.min() >= 0 and samples.max() <= 65535):  # 32-bit or signed
            raise ValueError(f"its integer samples run from {samples.min():g} to {samples.max():g}, beyond 16 bits "
                             f"(0 to 65535): save it with 8 or 16 bits, or as floats in [0, 1]")
        array = samples / (1.0 if image.mode == "F" else 65535.0)
        if mode == "RGB":
            array = np.repeat(array[..., None], 3, axis=-1)
        return LoadedImage(array_to_tensor(array), alpha, bits=16, source_mode=source_mode)
    if _has_alpha(image):
        with_alpha = image.convert("LA" if grey else "RGBA")
        alpha = array_to_tensor(np.asarray(with_alpha.getchannel("A"), dtype=np.float64) / 255.0)
        image = with_alpha.convert("L" if grey else "RGB")
    array = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
    return LoadedImage(array_to_tensor(array), alpha, bits=8, source_mode=source_mode)


def _from_sixteen_bit(high_bytes: Image.Image, low_bytes: Image.Image, mode: str) -> LoadedImage:
    """A 16-bit image that Pillow holds as its high bytes, completed by ``low_bytes`` (from
    ``_low_bytes``, whose mode is the file's: RGB, RGBA or LA)."""
    source_mode = f"{low_bytes.mode};16"
    high_bytes, low_bytes = ImageOps.exif_transpose(high_bytes), ImageOps.exif_transpose(low_bytes)
    high = np.asarray(high_bytes, dtype=np.float64)
    grey = low_bytes.mode == "LA"
    if grey:  # Pillow widened grey + alpha to RGBA: (grey, grey, grey, alpha)
        high = high[..., [0, 3]]
    samples = (high * 256.0 + np.asarray(low_bytes, dtype=np.float64)) / 65535.0
    alpha = array_to_tensor(samples[..., -1]) if low_bytes.mode in ("RGBA", "LA") else None
    if (key := high_bytes.info.get("transparency")) is not None and alpha is None:  # a transparent colour (tRNS)
        alpha = array_to_tensor((np.rint(samples * 65535.0) != np.asarray(key)).any(axis=-1).astype(np.float64))
    values = samples[..., :1] if grey else samples[..., :3]
    if grey and mode == "RGB":
        values = np.repeat(values, 3, axis=-1)
    elif not grey and mode == "L":  # as Pillow's own RGB -> L conversion
        values = values @ np.array(LUMA_601)
    return LoadedImage(array_to_tensor(values), alpha, bits=16, source_mode=source_mode)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """An ``H x W`` or ``H x W x C`` array as a float32 ``C x H x W`` tensor of its own memory."""
    return torch.from_numpy(np.atleast_3d(array).transpose(2, 0, 1).copy()).float()


def _palette_is_grey(image: Image.Image) -> bool:
    palette = np.asarray(image.convert("RGB"))
    return bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())


def load_image(path: str | Path | torch.Tensor, mode: str = "auto", what: str = "image") -> torch.Tensor:
    """Read an image file (or ``skimage:NAME``) as a ``C x H x W`` tensor in [0, 1] (see ``read_image``)."""
    return read_image(path, mode, what).pixels


def read_image(path: str | Path | torch.Tensor, mode: str = "auto", what: str = "image") -> LoadedImage:
    """Read an image file (or ``skimage:NAME``): its pixels as a ``C x H x W`` tensor in [0, 1] and its
    alpha channel, bit depth and mode.

    A tensor (``C x H x W``, ``1 x C x H x W`` or ``H x W``, values in [0, 1]) passes through, converted to ``mode`` as
    a file would be, so that the Python API takes images already in memory.

    ``mode`` is ``auto`` (grey stays grey, everything else becomes RGB), ``L`` or ``RGB``. EXIF
    orientation is applied; 16-bit images keep their precision; an alpha channel (RGBA, LA, a
    palette or PNG with transparency) is set aside. Any file that cannot be decoded raises a
    one-line ``DipError`` naming it.
    """
    if isinstance(path, torch.Tensor):
        return LoadedImage(_from_tensor(path, what, mode))
    path_text = str(path)
    if path_text.startswith(BUILTIN_PREFIX):
        return _from_pil(_builtin(path_text[len(BUILTIN_PREFIX):]), mode)
    file = Path(path_text).expanduser()
    if file.is_dir():
        raise DipError(f"{what} file {file} is a directory")
    if file.exists() and not file.is_file():  # a pipe or a device: reading it could block or never end
        raise DipError(f"{what} file {file} is not a regular file")
    if not file.is_file():
        raise DipError(f"{what} file not found: {file}")
    from dip.memory import check_image_fits  # here: dip.memory's own imports read images

    try:
        with _any_size(), Image.open(file) as image:
            check_image_fits(file, *image.size, _decoded_bands(image))
            if (frames := getattr(image, "n_frames", 1)) > 1:  # a multi-page TIFF, an animated GIF
                log.info(f"{what} file {file} holds {frames} frames: the first is read")
            low_bytes = _low_bytes(file, image)
            image.load()
            loaded = _from_pil(image, mode) if low_bytes is None else _from_sixteen_bit(image, low_bytes, mode)
    except DipError:
        raise
    except Exception as error:  # decoders raise anything on a malformed file: one line for all of them
        raise DipError(f"cannot read {what} file {file}: {one_line(error)}") from None
    if min(loaded.pixels.shape[-2:]) < 1:
        raise DipError(f"{what} file {file} has no pixels")
    return loaded


def _decoded_bands(image: Image.Image) -> int:
    """Samples per pixel as the image is read: a palette image's colours, not its one index."""
    if image.mode in ("P", "PA"):
        return 4 if image.mode == "PA" or "transparency" in image.info else 3
    return len(image.getbands())


@contextmanager
def _any_size():
    """Pillow's decompression-bomb limit lifted: the user names the file, and ``check_image_fits`` weighs
    its size against this machine's memory instead (Pillow refuses 179 MP, a scan that ``data.size`` crops).
    Put back when the last of the reads under way ends: threads (the benchmark's baselines) read at once."""
    global _reads_unlimited, _pillow_limit
    with _LIMIT_LOCK:
        if _reads_unlimited == 0:
            _pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _reads_unlimited += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _reads_unlimited -= 1
            if _reads_unlimited == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_limit


_LIMIT_LOCK = threading.Lock()
_reads_unlimited = 0  # the reads under way with Pillow's limit lifted
_pillow_limit: int | None = None  # the limit to put back after them


def _from_tensor(image: torch.Tensor, what: str, mode: str = "auto") -> torch.Tensor:
    if image.is_meta:
        raise DipError(f"{what} tensor is on the meta device: it has a shape but no values")
    if image.layout != torch.strided:  # most of torch's operations have no sparse kernels
        raise DipError(f"{what} tensor is {str(image.layout).removeprefix('torch.')}: pass a dense one (.to_dense())")
    if image.is_complex():  # converting it to float would keep its real part only
        raise DipError(f"{what} tensor is {image.dtype}, not real: an image's values are real numbers in [0, 1]")
    image = image.detach().float().cpu()
    if image.dim() == 2:
        image = image[None]
    if image.dim() == 4 and image.shape[0] == 1:  # a batch of one, as the results hold their images
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise DipError(f"{what} tensor must be C x H x W (or 1 x C x H x W) with C = 1 or 3, got shape "
                       f"{tuple(image.shape)}")
    if image.numel() == 0:
        raise DipError(f"{what} tensor is empty ({'x'.join(map(str, image.shape))})")
    if nans := image.isnan().sum().item():  # its minimum and maximum would be NaN too
        raise DipError(f"{what} tensor holds {nans} NaN value(s) of {image.numel()}")
    low, high = image.min().item(), image.max().item()
    if not (0 <= low and high <= 1):  # clamping would make 8-bit values an almost white image
        raise DipError(f"{what} tensor holds values in [{low:.4g}, {high:.4g}], not in [0, 1] (8-bit values: divide "
                       f"them by 255; noise added without clipping: clamp it)")
    if mode == "L" and image.shape[0] == 3:  # Pillow's conversion to L, as a file read in mode L gets
        return (torch.tensor(LUMA_601)[:, None, None] * image).sum(0, keepdim=True)
    if mode == "RGB" and image.shape[0] == 1:
        return image.expand(3, -1, -1).clone()
    return image


def _with_alpha(image: torch.Tensor, alpha: torch.Tensor | None) -> np.ndarray:
    """``C x H x W`` in [0, 1] and an optional ``1 x H x W`` alpha channel as one ``H x W x C'`` array."""
    image = image.detach().float().cpu()
    if alpha is not None:
        image = torch.cat([image, resize_alpha(alpha, image.shape[-2:])])
    return image.clamp(0, 1).numpy().transpose(1, 2, 0)


def to_pil(image: torch.Tensor, alpha: torch.Tensor | None = None) -> Image.Image:
    """``C x H x W`` in [0, 1] (C = 1 or 3), with an optional ``1 x H x W`` alpha channel, to an 8-bit
    PIL image: L, RGB, LA or RGBA."""
    array = (_with_alpha(image, alpha) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def sixteen_bit_png(image: torch.Tensor, alpha: torch.Tensor | None = None) -> bytes:
    """``C x H x W`` in [0, 1] (with an optional ``1 x H x W`` alpha channel) as a PNG file with 16
    bits per channel: grey, grey + alpha, RGB or RGBA (Pillow writes 16-bit grey only)."""
    array = (_with_alpha(image, alpha) * 65535.0 + 0.5).astype(">u2")
    height, width, channels = array.shape
    scanlines = np.concatenate(  # each row: filter type 0 (none), then its big-endian samples
        [np.zeros((height, 1), np.uint8), array.reshape(height, width * channels).view(np.uint8)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    chunks = ((b"IHDR", header), (b"IDAT", zlib.compress(scanlines.tobytes())), (b"IEND", b""))
    return PNG_SIGNATURE + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)) for kind, data in chunks
    )


def resize_alpha(alpha: torch.Tensor, size) -> torch.Tensor:
    """A ``1 x H x W`` alpha channel resampled to ``size`` (the observation of a super-resolution
    problem is smaller than its solution)."""
    alpha = alpha.detach().float().cpu()
    if tuple(alpha.shape[-2:]) == tuple(size):
        return alpha
    return F.interpolate(alpha[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]


def save_image(image: torch.Tensor, path: str | Path, alpha: torch.Tensor | None = None, bits: int = 8) -> None:
    """Write a PNG atomically (a reader never sees a half-written file), with 8 or 16 ``bits`` per
    channel (``to_pil``, ``sixteen_bit_png``)."""
    if bits == 16:
        data = sixteen_bit_png(image, alpha)
        write_atomically(Path(path), lambda handle: handle.write(data))
    else:
        write_atomically(Path(path), lambda handle: to_pil(image, alpha).save(handle, format="PNG"))


def centre_offsets(size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """Where ``centre_crop`` cuts an image of ``size`` (height, width): its window's (top, left)."""
    return max(0, (size[0] - height) // 2), max(0, (size[1] - width) // 2)


def centre_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height`` x ``width`` window (no-op on a dimension already small enough)."""
    top, left = centre_offsets(tuple(image.shape[-2:]), height, width)
    return image[..., top : top + height, left : left + width]


def data_crop_offsets(size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """Where ``data.size`` cuts an input image of ``size`` (and its mask, ground truth or guide): the
    centre window's (top, left), rounded down to even numbers, so that the crop of a colour filter
    mosaic, and of whatever is aligned with it, keeps the 2x2 tile's phase."""
    top, left = centre_offsets(size, height, width)
    return top - top % 2, left - left % 2


def data_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The window of ``data_crop_offsets``: about the centre, at even offsets."""
    top, left = data_crop_offsets(tuple(image.shape[-2:]), height, width)
    return image[..., top : top + height, left : left + width]
