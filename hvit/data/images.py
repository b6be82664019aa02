"""Reading one image: the single reader behind the data sets, the explanations and both apps.

`load_image` takes a path, raw bytes, a PIL image or a numpy array and gives a checked RGB image. The
order of the checks is the point: an image file is a header that declares a size followed by pixel
data that can expand to far more than the file (a 600 KB TIFF can declare 13000x13000 float pixels,
2.7 GB once decoded), so everything that can be judged without decoding is judged first:

1. a path must be a regular file (a named pipe would block ``open`` forever, a device never ends), and
   its size in bytes must be within ``max_bytes``;
2. only the header is read (``Image.open``), in one of the formats of `IMG_EXTENSIONS`, and the
   declared width, height, pixel count and TIFF tile size are checked against ``max_side`` and
   ``max_pixels``;
3. only then are the pixels decoded (``.load()``), the first frame only (frames are never counted:
   counting the frames of a GIF means reading them all), and the EXIF orientation is applied, so a
   phone photo taken upright is upright.

Every mode PIL produces becomes 8-bit RGB with a fixed rule, so the same file gives the same pixels in
training, in the explanations and in the apps:

- integers are scaled by the range of their type: 16-bit 0..65535 and 32-bit signed -2^31..2^31-1
  onto 0..255 (a TIFF's declared bits per sample decide; PIL's 32-bit mode ``I`` holding only values
  in 0..65535, as 16-bit PNG, PGM and PPM files give, counts as 16-bit);
- floats (mode ``F``, float arrays) whose finite values all lie in [0, 1] are intensities and are
  scaled by 255, so a dark image stays dark; any other float image is stretched from its own minimum
  (black) to its own maximum (white), because such data (depth, temperature, a model's output) has no
  agreed white point. NaN becomes the minimum; infinities are clipped to the finite range; a constant
  image outside [0, 1] is black;
- alpha (LA, PA, RGBA, a palette's or a colour's ``transparency``, premultiplied La / RGBa) is
  composited on white: transparent parts look as a browser shows them on a white page, while dropping
  alpha would show whatever colour sits under a transparent pixel (often black);
- CIELAB goes through a colour-managed Lab -> sRGB transform (PIL's plain ``convert`` gets it wrong);
  CMYK, YCbCr, HSV, 1 and L use PIL's conversion.

Every refusal is an `ImageReadError` whose message names the image, says what is wrong and what would
work.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np

# Importing a plugin registers its decoder; `Image.open(formats=...)` only tries registered ones.
from PIL import Image, ImageOps, TiffImagePlugin, WebPImagePlugin  # noqa: F401

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "IMG_EXTENSIONS",
    "IMAGE_FORMATS",
    "ImageReadError",
    "ImageSource",
    "file_kind",
    "load_image",
]

# File suffixes hvit treats as images (torchvision's list plus GIF), compared lower-case.
IMG_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)
# The PIL decoders those suffixes need (JPEG includes the multi-picture MPO some cameras write). Nothing
# else is tried, so a file named .png that holds EPS or PDF never reaches a decoder that runs Ghostscript.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
_FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP, TIFF, PPM or PGM"

# Defaults of the limits; each call can pass its own. 50 million pixels holds a 48-megapixel phone
# photo; decoding it takes at most about 0.6 GB (a float image: PIL's copy, numpy's, the 8-bit result).
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_SIDE = 16_384

# Everything `load_image` accepts.
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

_TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 322, 323
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339
_ALPHA_MODES = ("LA", "PA", "RGBA")


class ImageReadError(OSError, ValueError):
    """An image that cannot be used: missing, not a regular file, too large, or not decodable.

    Both an ``OSError`` (a file problem, as PIL's own errors are) and a ``ValueError`` (bad input), so
    callers that catch either keep working. The message names the image and says what would work.
    """


def file_kind(mode: int) -> str:
    """What an ``os.stat`` ``st_mode`` is, in words ("regular file", "named pipe (FIFO)", "folder", ...)."""
    kinds = [
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "special file")


def load_image(
    source: ImageSource,
    mode: str | None = "RGB",
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_side: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Read and check one image, converting it to ``mode``.

    Args:
        source: a path to an image file; the bytes of one; a PIL image (checked and converted, decoded
            only after the checks if it was opened lazily); or an (H, W), (H, W, 1), (H, W, 3) or
            (H, W, 4) numpy array (uint8 as is, other integers scaled by their type's range, floats as
            described in the module docstring, bool as black and white).
        mode: PIL mode of the result ("RGB", "L", ...), reached through the RGB rules above; ``None``
            keeps the decoded mode (EXIF orientation still applied).
        max_bytes: largest accepted file or byte string (default `DEFAULT_MAX_BYTES`).
        max_pixels: largest accepted width x height (default `DEFAULT_MAX_PIXELS`).
        max_side: largest accepted width or height (default `DEFAULT_MAX_SIDE`).
        name: how messages call the image (default: the path, or "the image data" for bytes).

    Returns:
        The image, decoded, upright, in ``mode``.

    Raises:
        ImageReadError: the path is missing or not a regular file, the file or the image is larger than
            the limits, the content is not a supported image, or the type of ``source`` is not one of
            the above. Decoding never starts before the size checks have passed.
    """
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    limits = (
        DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        DEFAULT_MAX_SIDE if max_side is None else max_side,
    )
    if isinstance(source, Image.Image):
        label = name or "the image"
        img = _decoded(source, label, *limits)
    elif isinstance(source, np.ndarray):
        label = name or "the image array"
        img = _from_array(source, label, *limits)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "the image data"
        _check_bytes(memoryview(source).nbytes, label, max_bytes)
        img = _open_decoded(io.BytesIO(source), label, *limits)
    elif isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        with _open_regular_file(Path(source), label, max_bytes) as f:
            img = _open_decoded(f, label, *limits)
    else:
        raise ImageReadError(
            f"cannot read an image from a {type(source).__name__}; give a path, the file's bytes, a PIL "
            "image or an (H, W[, C]) numpy array"
        )
    if mode is None:
        return img
    rgb = _to_rgb(img, label)
    return rgb if mode == "RGB" else rgb.convert(mode)


# --------------------------------------------------------------------------------------------------
# Before decoding: the file, its size, its header
# --------------------------------------------------------------------------------------------------


def _open_regular_file(path: Path, label: str, max_bytes: int) -> BinaryIO:
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise ImageReadError(f"no image file at '{label}'; check the path") from err
    except OSError as err:
        raise ImageReadError(f"cannot open '{label}': {err.strerror or err}") from err
    _check_regular(info.st_mode, label)
    _check_bytes(info.st_size, label, max_bytes)
    # O_NONBLOCK: should the path turn into a named pipe between the stat and the open, opening it
    # still returns at once, and the fstat below refuses it. It changes nothing for a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise ImageReadError(f"cannot open '{label}': {err.strerror or err}") from err
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode, label)
        _check_bytes(info.st_size, label, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(st_mode: int, label: str) -> None:
    if not stat.S_ISREG(st_mode):
        raise ImageReadError(
            f"'{label}' is a {file_kind(st_mode)}, not a regular file; give the path of an image file "
            f"({_FORMAT_NAMES})"
        )


def _check_bytes(size: int, label: str, max_bytes: int) -> None:
    if size == 0:
        raise ImageReadError(f"'{label}' is empty (0 bytes); give a {_FORMAT_NAMES} image")
    if size > max_bytes:
        raise ImageReadError(
            f"'{label}' is larger than the limit of {_size(max_bytes)} ({_size(size)}); use a smaller "
            "image (fewer pixels or a compressed format such as JPEG or PNG)"
        )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _check_size(width: int, height: int, label: str, max_pixels: int, max_side: int) -> None:
    if width < 1 or height < 1 or max(width, height) > max_side or width * height > max_pixels:
        raise ImageReadError(
            f"'{label}' is {width}x{height} pixels; use one between 1 and {max_side} pixels a side and "
            f"at most {max_pixels / 1e6:g} million pixels in all (resize it first)"
        )


def _check_tiles(img: Image.Image, label: str, max_pixels: int) -> None:
    """A TIFF decodes tile by tile into a buffer of the declared tile size, whatever the image size."""
    tags = getattr(img, "tag_v2", None)
    if not tags or _TIFF_TILE_WIDTH not in tags:
        return
    tile_w, tile_h = int(tags.get(_TIFF_TILE_WIDTH, 0)), int(tags.get(_TIFF_TILE_LENGTH, 0))
    if tile_w * tile_h > max_pixels:
        raise ImageReadError(
            f"'{label}' is a TIFF with {tile_w}x{tile_h}-pixel tiles, more than the limit of "
            f"{max_pixels / 1e6:g} million pixels; save it untiled or with smaller tiles"
        )


def _open_decoded(f: BinaryIO, label: str, max_pixels: int, max_side: int) -> Image.Image:
    """Read the header of an open file, check it, then decode; the file may be closed afterwards
    (the first frame is all that is ever used)."""
    try:
        img = Image.open(f, formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as err:  # PIL's own ceiling, checked from the header too
        raise ImageReadError(
            f"'{label}' declares far too many pixels ({err}); use one of at most {max_side} pixels a "
            f"side and {max_pixels / 1e6:g} million pixels in all"
        ) from err
    except Exception as err:  # UnidentifiedImageError, or whatever a damaged header makes PIL raise
        raise ImageReadError(
            f"'{label}' is not a readable image (its content is not a {_FORMAT_NAMES} image, or it is "
            f"damaged); give a {_FORMAT_NAMES} file"
        ) from err
    return _decoded(img, label, max_pixels, max_side, in_place=True)


def _decoded(
    img: Image.Image, label: str, max_pixels: int, max_side: int, in_place: bool = False
) -> Image.Image:
    """``img`` checked against the limits, then decoded and turned upright (a copy unless ``in_place``)."""
    _check_size(*img.size, label, max_pixels, max_side)
    _check_tiles(img, label, max_pixels)
    try:
        img.load()  # the first frame only; other frames are never read
        if in_place:
            ImageOps.exif_transpose(img, in_place=True)
            return img
        return ImageOps.exif_transpose(img)
    # Any failure inside PIL's decoders on a hostile file is a property of the file, not a bug here.
    except Exception as err:
        raise ImageReadError(
            f"'{label}' could not be decoded ({err}); it may be truncated or damaged: save it again "
            f"as {_FORMAT_NAMES}"
        ) from err


# --------------------------------------------------------------------------------------------------
# After decoding: every mode to 8-bit RGB
# --------------------------------------------------------------------------------------------------


def _from_array(arr: np.ndarray, label: str, max_pixels: int, max_side: int) -> Image.Image:
    shape_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))
    if not shape_ok or arr.dtype.kind not in "biuf":
        raise ImageReadError(
            f"{label} has shape {arr.shape} and dtype {arr.dtype}; expected an (H, W), (H, W, 1), "
            "(H, W, 3) or (H, W, 4) array of numbers"
        )
    _check_size(arr.shape[1], arr.shape[0], label, max_pixels, max_side)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(_to_uint8(arr)))  # (H, W) L, (H, W, 3) RGB, (H, W, 4) RGBA


def _to_uint8(arr: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """8-bit version of integer, bool or float pixels, by the rules of the module docstring.

    Args:
        arr: pixel values, any shape.
        value_range: (black, white) for integers; default: the range of ``arr``'s type.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind == "f":
        return _float_to_uint8(arr)
    if value_range is None:
        info = np.iinfo(arr.dtype)
        value_range = (float(info.min), float(info.max))
    black, white = value_range
    # float32 holds every step that matters: the result has 256 levels.
    out = arr.astype(np.float32)
    out -= black
    out *= 255.0 / (white - black)
    return _round_to_uint8(out)


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=np.float32)  # a writable copy to work in
    finite = np.isfinite(out)
    all_finite = bool(finite.all())
    values = out if all_finite else out[finite]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not all_finite:
        np.clip(out, lo, hi, out=out)  # +-inf to the finite range
        out[np.isnan(out)] = lo
    del finite, values
    if lo >= 0.0 and hi <= 1.0:
        out *= 255.0  # intensities in [0, 1]
    elif hi > lo:
        out -= lo
        out *= 255.0 / (hi - lo)
    else:
        out[...] = 0.0  # a constant outside [0, 1]: no range to show
    return _round_to_uint8(out)


def _round_to_uint8(out: np.ndarray) -> np.ndarray:
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _integer_range(img: Image.Image) -> tuple[float, float]:
    """(black, white) of a mode ``I`` / ``I;16*`` image: its declared type, else 16-bit or 32-bit."""
    if img.mode.startswith("I;16"):
        return (0.0, 65535.0)
    tags = getattr(img, "tag_v2", None)
    if tags and _TIFF_BITS_PER_SAMPLE in tags:
        bits = tags[_TIFF_BITS_PER_SAMPLE]
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        fmt = tags.get(_TIFF_SAMPLE_FORMAT, 1)
        signed = int(fmt[0] if isinstance(fmt, tuple) else fmt) == 2
        if 1 <= bits <= 32:
            return (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0**bits - 1)
    lo, hi = img.getextrema()
    if lo >= 0 and hi <= 65535:  # 16-bit data PIL keeps in 32 bits
        return (0.0, 65535.0)
    return (-(2.0**31), 2.0**31 - 1)


_LAB_TO_SRGB = None


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    global _LAB_TO_SRGB
    from PIL import ImageCms

    if _LAB_TO_SRGB is None:
        _LAB_TO_SRGB = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
    return ImageCms.applyTransform(img, _LAB_TO_SRGB)


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """8-bit RGB of any decoded image (see the module docstring for the rules)."""
    if img.mode == "RGB":
        return img
    if img.mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode == "I" or img.mode.startswith("I;16"):
        arr = _to_uint8(np.asarray(img), _integer_range(img))
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "LAB":
        return _lab_to_rgb(img)
    if img.mode in ("La", "RGBa"):  # premultiplied: on white, colour x alpha is there already
        arr = np.asarray(img).astype(np.uint16)  # (H, W, 2 | 4), alpha last
        on_white = np.minimum(arr[..., :-1] + (255 - arr[..., -1:]), 255).astype(np.uint8)
        return Image.fromarray(on_white[..., 0] if img.mode == "La" else on_white).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise ImageReadError(
            f"'{label}' has the pixel mode {img.mode!r}, which cannot be turned into RGB ({err}); save "
            "it as an 8-bit RGB or grayscale image"
        ) from err
