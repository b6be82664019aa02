"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import struct
import zlib

import hvit
from hvit.data import SHAPE_CLASSES
from hvit.preprocessing import Preprocessing

# Preprocessing of the 16 px tiny models the training, checkpoint and DDP tests train.
PRE = Preprocessing(img_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, class_names=list(SHAPE_CLASSES))


def small(name: str) -> hvit.HierarchialViT:
    """A registry variant with its stage layout (patch, SR ratios, class token, linear SRA) but narrow
    and shallow, so tests stay fast."""
    return hvit.create_model(name, embed_dims=(16, 32, 80, 64), depths=(1, 1, 2, 1))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` RGB pixels, followed by a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
