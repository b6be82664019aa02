"""Explainability: attention extraction, attention views, Captum attributions and their checks."""

from hvit.explain.extract import AttentionMaps, extract_attention, record_attention

__all__ = ["AttentionMaps", "extract_attention", "record_attention"]
