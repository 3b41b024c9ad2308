"""A tiny Hugging Face text encoder folder built in code, for tests (no weights are downloaded or shipped).

:func:`tiny_text_folder` writes what a real sentence-transformers folder holds: ``config.json`` and
``model.safetensors`` of a 2-layer BERT with hidden size 32 and random (seeded) weights, a word-level
``tokenizer.json`` over :data:`WORDS` with BERT's ``[CLS] ... [SEP]`` template, and
``sentence_bert_config.json`` with the longest input. ``load_model(folder)`` then loads it like the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("the a an of to and in is it that for on with as was at by this be from or are not have has "
         "model models text texts search index server batch token tokens engine fast slow small large "
         "image images cat dog bird fish car road tree river city house red green blue black white "
         "runs ran read reads write writes quick brown fox jumps over lazy python code file files data").split()
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def tiny_text_folder(folder: str | Path, layers: int = 2, hidden: int = 32, max_length: int = 32,
                     seed: int = 0) -> Path:
    """Write a tiny BERT sentence encoder and its tokenizer to ``folder``; return the folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(SPECIALS + tuple(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.save(str(folder / "tokenizer.json"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=max_length,
                        pad_token_id=0)
    torch.manual_seed(seed)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    BertModel(config).save_pretrained(str(folder))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length}))
    return folder
