"""Building blocks of a pyramid vision transformer, one concept per file."""

from hvit.layers.attention import KeyReduction, MultiScaleAttention
from hvit.layers.block import Block
from hvit.layers.drop_path import DropPath
from hvit.layers.dwconv import DepthwiseConv2d
from hvit.layers.mlp import Mlp
from hvit.layers.patch_embed import PatchEmbed, resize_pos_embed

__all__ = [
    "Block",
    "DepthwiseConv2d",
    "DropPath",
    "KeyReduction",
    "Mlp",
    "MultiScaleAttention",
    "PatchEmbed",
    "resize_pos_embed",
]
