"""The one image reader (`hvit.data.load_image`): what it refuses before decoding, and how every pixel
mode becomes RGB. Every hostile file is made here, in the test."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvit.data import ImageReadError, load_image

from helpers import png_header_only

# --- files made by hand: headers that declare more than they hold ----------------------------------------


def tiff(width: int, height: int, data: bytes, bits: int = 32, sample_format: int = 3, **extra: int) -> bytes:
    """A little-endian one-strip grayscale TIFF; ``extra`` adds tags by number (``t322=...``)."""
    tags = {
        256: width,
        257: height,
        258: bits,
        259: 1,  # no compression
        262: 1,  # black is zero
        273: 0,  # strip offset, filled in below
        277: 1,  # one sample per pixel
        278: height,
        279: len(data),
        339: sample_format,  # 1 unsigned, 2 signed, 3 float
    }
    tags.update({int(k[1:]): v for k, v in extra.items()})
    count = len(tags)
    data_offset = 8 + 2 + 12 * count + 4
    tags[273] = data_offset
    ifd = struct.pack("<H", count)
    for tag in sorted(tags):
        ifd += struct.pack("<HHII", tag, 4, 1, tags[tag])  # every value as one LONG
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def read_in_thread(*args: object, **kwargs: object) -> BaseException | Image.Image:
    """``load_image(*args)`` in a thread that may not block: a reader stuck on a named pipe fails the
    test instead of hanging it (the pipe is then opened for writing, which releases the reader)."""
    result: list[BaseException | Image.Image] = []

    def target() -> None:
        try:
            result.append(load_image(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        fd = os.open(args[0], os.O_RDWR | os.O_NONBLOCK)  # unblock the reader, then fail
        os.close(fd)
        thread.join(timeout=5)
        pytest.fail(f"load_image({args[0]!r}) blocked")
    return result[0]


# --- refused before reading or decoding ------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "photo.png"
    os.mkfifo(pipe)
    outcome = read_in_thread(pipe)
    assert isinstance(outcome, ImageReadError)
    assert str(outcome) == (
        f"'{pipe}' is a named pipe (FIFO), not a regular file; give the path of an image file "
        "(PNG, JPEG, BMP, GIF, WebP, TIFF, PPM or PGM)"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "is a folder, not a regular file"),
        (lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
        (lambda d: d / "missing.png", "no image file at '.*missing.png'; check the path"),
        (lambda d: write(d / "empty.png", b""), r"'.*empty.png' is empty \(0 bytes\)"),
        (lambda d: write(d / "a.png", b"\x89PNG\r\n\x1a\n junk"), "'.*a.png' is not a readable image"),
        # EPS named .png: only the image formats hvit reads are tried, never Ghostscript.
        (
            lambda d: write(d / "b.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"),
            "not a readable",
        ),
        (lambda d: write(d / "t.png", png_header_only(8, 8)), "could not be decoded .*truncated or damaged"),
    ],
    ids=["folder", "device", "missing", "empty", "garbage", "eps", "truncated"],
)
def test_what_is_not_an_image_file_is_refused_in_words(tmp_path, make, message):
    source = make(tmp_path)
    if not Path(source).exists() and "missing" not in str(source):
        pytest.skip(f"{source} does not exist on this system")
    with pytest.raises(ImageReadError, match=message):
        load_image(source)


def test_limits_are_keyword_arguments_and_checked_from_the_header(tmp_path):
    path = write(tmp_path / "small.png", encoded(Image.new("RGB", (30, 20), "red"), "PNG"))
    assert load_image(path).size == (30, 20)
    with pytest.raises(ImageReadError, match=r"larger than the limit of 50 bytes \(\d+ bytes\)"):
        load_image(path, max_bytes=50)
    with pytest.raises(ImageReadError, match="is 30x20 pixels; use one between 1 and 25 pixels a side"):
        load_image(path, max_side=25)
    with pytest.raises(ImageReadError, match="at most 0.0005 million pixels in all"):
        load_image(path, max_pixels=500)
    with pytest.raises(ImageReadError, match="the image data"):  # bytes have no name: say so
        load_image(path.read_bytes(), max_bytes=50)
    with pytest.raises(ImageReadError, match="'upload.png' is larger"):
        load_image(path.read_bytes(), max_bytes=50, name="upload.png")


def test_header_only_bombs_are_refused_by_their_declared_size(tmp_path):
    # Decoding either file would fail on its missing data with "could not be decoded"; being refused for
    # its size instead shows that the size was judged from the header, before any decoding.
    png = write(tmp_path / "bomb.png", png_header_only(100_000, 100_000))
    with pytest.raises(ImageReadError, match="'.*bomb.png' declares far too many pixels"):
        load_image(png)
    png9k = write(tmp_path / "9k.png", png_header_only(9_000, 9_000))
    with pytest.raises(ImageReadError, match="is 9000x9000 pixels; .* at most 50 million pixels"):
        load_image(png9k)
    float_tiff = write(tmp_path / "bomb.tif", tiff(13_000, 13_000, b"\0" * 4096))
    with pytest.warns(Image.DecompressionBombWarning):  # PIL's own warning threshold, passed
        with pytest.raises(ImageReadError, match="'.*bomb.tif' is 13000x13000 pixels"):
            load_image(float_tiff)


def test_huge_tiff_tiles_are_refused_before_decoding(tmp_path):
    path = write(
        tmp_path / "tiles.tif", tiff(16, 16, b"\0" * 1024, bits=8, sample_format=1, t322=65536, t323=65536)
    )
    with pytest.raises(ImageReadError, match="TIFF with 65536x65536-pixel tiles"):
        load_image(path)


@pytest.mark.slow  # a fresh process imports torch
def test_reading_a_header_only_bomb_keeps_memory_bounded(tmp_path):
    """In a fresh process: the peak resident memory while reading the bombs (from the data set too)
    grows by far less than decoding them would take (2.7 GB for the float TIFF)."""
    write(tmp_path / "bomb.tif", tiff(13_000, 13_000, b"\0" * 4096))
    write(tmp_path / "bomb.png", png_header_only(100_000, 100_000))
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir()
    write(tmp_path / "train" / "a" / "bomb.tif", (tmp_path / "bomb.tif").read_bytes())
    write(tmp_path / "train" / "b" / "ok.png", encoded(Image.new("RGB", (4, 4)), "PNG"))
    script = f"""
import resource, warnings
warnings.simplefilter("ignore")
from hvit.data import HViTDataset, ImageReadError, load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for source in [{str(tmp_path / "bomb.tif")!r}, {str(tmp_path / "bomb.png")!r}]:
    try:
        load_image(source)
    except ImageReadError:
        refused += 1
try:
    HViTDataset({str(tmp_path)!r})[0]
except ImageReadError:
    refused += 1
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(refused, (after - before) // 1024)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    refused, grown_mb = map(int, out.stdout.split())
    assert refused == 3
    assert grown_mb < 200, f"peak memory grew by {grown_mb} MB while refusing header-only bombs"


def test_unsupported_sources_and_arrays_are_refused_in_words():
    with pytest.raises(ImageReadError, match="cannot read an image from a int; give a path"):
        load_image(123)
    with pytest.raises(ImageReadError, match=r"has shape \(4, 4, 2\) .*expected an \(H, W\)"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageReadError, match="is 5x5000 pixels"):
        load_image(np.zeros((5000, 5), np.uint8), max_side=4096)


# --- every mode to RGB -----------------------------------------------------------------------------------


def gray_row(img: Image.Image) -> list[int]:
    """The red channel of the first row (the image is gray: R = G = B)."""
    arr = np.asarray(img)
    assert img.mode == "RGB" and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    return arr[0, :, 0].tolist()


def test_sixteen_bit_png_is_scaled_by_its_range(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)
    path = write(tmp_path / "deep.png", encoded(Image.fromarray(values), "PNG"))
    assert Image.open(path).mode == "I;16"
    assert gray_row(load_image(path)) == [0, 1, 4, 128, 255]  # 65535 -> 255, not clipped to white
    assert gray_row(load_image(values)) == [0, 1, 4, 128, 255]  # the same rule for arrays


def test_sixteen_bit_pgm_read_by_pil_as_32_bit_counts_as_16_bit():
    data = b"P5\n3 1\n65535\n" + np.array([0, 32896, 65535], ">u2").tobytes()
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert gray_row(load_image(data)) == [0, 128, 255]


def test_32_bit_integers_are_scaled_by_the_int32_range(tmp_path):
    values = np.array([[-(2**31), 0, 2**31 - 1]], np.int32)
    path = write(tmp_path / "wide.tif", encoded(Image.fromarray(values), "TIFF"))
    low, middle, high = gray_row(load_image(path))
    assert (low, high) == (0, 255) and middle in (127, 128)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255]),  # in [0, 1]: intensities, times 255
        ([-1.0, 0.0, 1.0, 3.0], [0, 64, 128, 255]),  # otherwise: own minimum to own maximum
        ([np.nan, 0.0, 0.5, np.inf], [0, 0, 128, 128]),  # NaN -> minimum, inf -> maximum
        ([5.0, 5.0, 5.0, 5.0], [0, 0, 0, 0]),  # constant outside [0, 1]: no range, black
    ],
    ids=["unit-range", "own-range", "non-finite", "constant"],
)
def test_float_tiff_is_normalised_by_the_documented_rule(tmp_path, values, expected):
    arr = np.array([values], np.float32)
    path = write(tmp_path / "f.tif", tiff(4, 1, arr.tobytes()))
    assert Image.open(path).mode == "F"
    assert gray_row(load_image(path)) == expected
    assert gray_row(load_image(arr)) == expected


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide, 20 high: red on the left, blue on the right. Orientation 6 says "turn 90 degrees
    # clockwise to view", so the viewer sees 20 wide, 40 high, red on top.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path / "phone.jpg", encoded(stored, "JPEG", exif=exif, quality=95))
    img = load_image(path)
    assert img.size == (20, 40)
    top, bottom = img.getpixel((10, 3)), img.getpixel((10, 36))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert load_image(path, mode=None).size == (20, 40)  # also when the mode is kept


def test_cmyk_lab_and_other_colour_modes(tmp_path):
    cmyk = write(tmp_path / "print.tif", encoded(Image.new("CMYK", (3, 2), (0, 255, 255, 0)), "TIFF"))
    assert load_image(cmyk).getpixel((0, 0)) == (255, 0, 0)
    lab = write(tmp_path / "lab.tif", encoded(Image.new("LAB", (3, 2), (128, 128, 128)), "TIFF"))
    assert Image.open(lab).mode == "LAB"
    assert all(abs(c - 119) <= 2 for c in load_image(lab).getpixel((0, 0)))  # L* 50, neutral: gray
    red = load_image(Image.new("LAB", (1, 1), (136, 208, 195))).getpixel((0, 0))  # L 53 a 80 b 67
    assert red[0] > 230 and red[1] < 40 and red[2] < 40
    for mode, colour, rgb in [
        ("1", 1, (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("I;16B", 65535, (255, 255, 255)),
    ]:
        img = load_image(Image.new(mode, (2, 2), colour))
        assert img.mode == "RGB" and img.getpixel((1, 1)) == rgb, mode


def test_alpha_is_composited_on_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)  # pixel 0: index 0 (black, transparent); pixel 1: red
    path = write(tmp_path / "logo.png", encoded(palette, "PNG", transparency=0))
    img = load_image(path)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((1, 0)) == (255, 0, 0)
    half = load_image(Image.new("RGBA", (1, 1), (255, 0, 0, 128))).getpixel((0, 0))
    assert half[0] == 255 and 126 <= half[1] == half[2] <= 128
    assert load_image(Image.new("LA", (1, 1), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    for transparent in ("La", "RGBa", "PA"):  # all zero: no colour, no opacity
        assert load_image(Image.new(transparent, (1, 1))).getpixel((0, 0)) == (255, 255, 255)
    # Premultiplied half-transparent red: the stored colour is red x alpha, (128, 0, 0, 128).
    assert load_image(Image.new("RGBa", (1, 1), (128, 0, 0, 128))).getpixel((0, 0)) == (255, 127, 127)
    array = np.zeros((1, 1, 4), np.uint8)  # transparent black
    assert load_image(array).getpixel((0, 0)) == (255, 255, 255)


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.slow  # a fresh process imports torch
def test_explain_reads_images_without_the_apps():
    """The core's explanations read images with the core's reader: nothing from hvit.demo is imported."""
    script = """
import sys
import numpy as np
import hvit.explain
from hvit.explain import prepare_images
from hvit.registry import create_model
x = prepare_images(create_model("hvit_nano"), np.zeros((10, 12, 3), np.uint8))
print(list(x.shape))
print(sorted(m for m in sys.modules if m.startswith("hvit.demo")))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    shape, demo_modules = out.stdout.split("\n")[:2]
    assert shape.startswith("[1, 3,")
    assert demo_modules == "[]"
