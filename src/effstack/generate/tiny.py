"""A tiny random Llama and a word-level tokenizer, built in code (tests, demos; nothing downloaded or shipped)."""

from __future__ import annotations

from .model import LanguageModel

__all__ = ["tiny_llama", "TINY_WORDS"]

TINY_WORDS = ("the a of to and in is it that for on with as at by this be from or are model text token batch "
              "engine fast slow small cat dog bird fish car road tree river city house red green blue quick "
              "brown fox jumps over lazy python code file data one two three four five six seven eight").split()
_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 32, max_positions: int = 256) -> LanguageModel:
    """A seeded random ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads / 2 KV heads) over :data:`TINY_WORDS`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_SPECIALS + tuple(TINY_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).float().eval()
    return LanguageModel("tiny", model, tokenizer, {"source": "built in code", "seed": seed,
                                                    "layers": layers, "hidden": hidden})
