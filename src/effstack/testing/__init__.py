"""Tiny deterministic models and helpers for tests (users may import them too)."""

from .models import tiny_cnn, tiny_mlp, tiny_resnet

__all__ = ["tiny_cnn", "tiny_mlp", "tiny_resnet"]
