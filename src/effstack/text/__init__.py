"""Text models: sentence embedders on ``transformers`` encoders, their tokenizer, corpus and quality scores."""

from .encoder import PRETRAINED, TextEmbedder, is_text_model, load_text_encoder, text_folder, text_input_spec

__all__ = ["PRETRAINED", "TextEmbedder", "is_text_model", "load_text_encoder", "text_folder", "text_input_spec"]
