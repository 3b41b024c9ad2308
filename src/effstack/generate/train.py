"""The recipe for a small Llama trained here on the offline corpus: a draft model for speculative decoding.

:func:`train_lm` builds a ``LlamaForCausalLM`` with the *teacher's tokenizer* (so it can draft for the teacher:
same vocabulary, same ids), then trains it on windows of the corpus' token stream (texts joined with EOS):

- ``loss="kd"`` (default with a teacher): distillation, KL(teacher || student) on the teacher's next-token
  distributions at every position (temperature ``T``, scaled by T^2) — the student learns what the teacher would
  say, which is what a draft needs to be accepted;
- ``loss="ce"``: plain next-token cross-entropy on the text (no teacher forward: cheaper steps).

The student's (tied) embedding starts as the teacher's embedding projected on its top ``hidden`` principal
directions (``init="teacher"``; SVD of the embedding matrix, deterministic), so token identities are meaningful
from step one; ``init="random"`` starts from transformers' initialisation. ``init="layers"`` makes the student a
shallower copy of the teacher itself: the teacher's width, embedding, head and final norm, and ``layers`` of its
decoder layers taken evenly from first to last (the shape options other than ``layers`` do not apply); the
embedding and head stay frozen and distillation trains the kept layers to stand in for the dropped ones. Such a
draft agrees with its teacher far sooner than one trained from scratch, at the cost of the teacher's (large)
vocabulary projection in every draft step. AdamW, linear warm-up then cosine, a
rich progress bar, an optional wall-clock cap (``minutes``). Seeded: the same config, texts and teacher give the
same weights on the same machine.

:func:`save_lm` writes ``save_pretrained`` + the tokenizer + ``effstack_train.json`` (the config and loss curve)
into a folder atomically; :func:`effstack.generate.load_lm` loads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from .model import LanguageModel

__all__ = ["TrainLMConfig", "TrainResult", "train_lm", "save_lm", "draft_config", "layer_subset"]

LOSSES, INITS = ("kd", "ce"), ("teacher", "random", "layers")


@dataclass(frozen=True)
class TrainLMConfig:
    """The student's shape and the training run.

    layers / hidden / heads / kv_heads / intermediate: the Llama's shape (hidden divisible by heads, heads by
    kv_heads). context: tokens per training window. steps: optimizer steps (``minutes`` stops earlier).
    """

    layers: int = 4
    hidden: int = 192
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 512
    context: int = 64
    batch_size: int = 8
    steps: int = 300
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.01
    loss: str = "kd"
    temperature: float = 1.0
    init: str = "teacher"
    minutes: float | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "context", "batch_size", "steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.context < 2:
            raise ConfigError("context must be at least 2 tokens")
        if self.hidden % self.heads or self.heads % self.kv_heads or (self.hidden // self.heads) % 2:
            raise ConfigError(f"hidden ({self.hidden}) must split into {self.heads} heads of an even size, and "
                              f"heads into {self.kv_heads} key/value heads")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not (self.lr > 0 and self.temperature > 0 and self.weight_decay >= 0 and self.warmup >= 0):
            raise ConfigError("lr and temperature must be positive, weight_decay and warmup not negative")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes must be positive, got {self.minutes!r}")


@dataclass
class TrainResult:
    lm: LanguageModel
    config: TrainLMConfig
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "steps"  # or "minutes"

    def summary(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "steps": self.steps, "seconds": round(self.seconds, 2),
                "stopped": self.stopped, "params": self.lm.meta.get("params"),
                "first_loss": self.history[0]["loss"] if self.history else None,
                "last_loss": self.history[-1]["loss"] if self.history else None, "history": self.history}


def draft_config(teacher: LanguageModel, config: TrainLMConfig) -> Any:
    """The student's ``LlamaConfig``: the shape in ``config``, the teacher's vocabulary and special ids."""
    from transformers import LlamaConfig

    tc = teacher.model.config
    return LlamaConfig(vocab_size=int(tc.vocab_size), hidden_size=config.hidden, intermediate_size=config.intermediate,
                       num_hidden_layers=config.layers, num_attention_heads=config.heads,
                       num_key_value_heads=config.kv_heads,
                       max_position_embeddings=int(getattr(tc, "max_position_embeddings", 2048)),
                       rope_theta=float(getattr(tc, "rope_theta", None) or 10000.0),
                       rms_norm_eps=float(getattr(tc, "rms_norm_eps", 1e-5)), tie_word_embeddings=True,
                       pad_token_id=tc.pad_token_id, bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id)


def layer_subset(total: int, keep: int) -> list[int]:
    """``keep`` layer indices spread evenly over ``range(total)``, always the first and the last."""
    if not 1 <= keep <= total:
        raise ConfigError(f"a student of {keep} layers cannot be taken from a teacher of {total}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def _shallow_copy(teacher: Any, keep: int) -> Any:
    """The teacher with only ``keep`` of its decoder layers (evenly spaced); a new model, the teacher untouched."""
    import copy

    import torch

    inner = getattr(teacher, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(f"init='layers' needs a decoder with model.layers (Llama-style); "
                          f"{type(teacher).__name__} has none; use init='teacher'")
    idx = layer_subset(len(layers), keep)
    student = copy.deepcopy(teacher)
    student.model.layers = torch.nn.ModuleList(student.model.layers[i] for i in idx)
    for i, layer in enumerate(student.model.layers):  # the KV cache is indexed by position in the stack
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = i
    cfg = student.config
    cfg.num_hidden_layers = len(idx)
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = [cfg.layer_types[i] for i in idx]
    student.get_input_embeddings().weight.requires_grad_(False)
    out = student.get_output_embeddings()
    if out is not None:
        out.weight.requires_grad_(False)
    return student.float()


def _init_embedding(student: Any, teacher: Any, seed: int) -> None:
    """The teacher's input embedding projected on its top principal directions (scaled to the student's init std)."""
    import torch

    emb = teacher.get_input_embeddings().weight.detach().float()
    std = float(student.get_input_embeddings().weight.detach().std())
    h = student.config.hidden_size
    centered = emb - emb.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    k = min(h, vh.shape[0])
    proj = centered @ vh[:k].T
    target = student.get_input_embeddings().weight
    out = torch.empty(target.shape, dtype=target.dtype)
    gen = torch.Generator().manual_seed(seed)
    out.normal_(0.0, std, generator=gen)  # any directions the teacher cannot fill
    out[:, :k] = proj * (std / float(proj.std().clamp_min(1e-12)))
    with torch.no_grad():
        target.copy_(out)


def _windows(stream: list[int], context: int) -> Any:
    import torch

    n = (len(stream) - 1) // context
    if n < 1:
        raise InputError(f"the training texts have {len(stream)} tokens; a window needs {context + 1}; "
                         "give more text or a smaller context")
    t = torch.tensor(stream[:n * context + 1], dtype=torch.long)
    # windows of context + 1 tokens that overlap by one: inputs are [:-1], targets [1:]
    return torch.stack([t[i * context:(i + 1) * context + 1] for i in range(n)])


def train_lm(teacher: LanguageModel, texts: Sequence[str], config: TrainLMConfig | None = None,
             name: str = "draft") -> TrainResult:
    """Train a small Llama on ``texts`` with ``teacher``'s tokenizer (and logits for ``loss="kd"``).

    Raises:
        InputError: too little text for one window.
        ConfigError: a bad config.
    """
    import torch
    from transformers import LlamaForCausalLM

    from ..train.loop import _progress, lr_factor
    from .model import _transformers
    from .quality import token_stream

    _transformers()  # quiet logs, no download bars
    config = config or TrainLMConfig()
    windows = _windows(token_stream(teacher, texts), config.context)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        if config.init == "layers":
            student = _shallow_copy(teacher.model, config.layers)
        else:
            student = LlamaForCausalLM(draft_config(teacher, config)).float()
        if config.init == "teacher":
            _init_embedding(student, teacher.model, config.seed)
    student.train()
    trained = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    rest = [p for p in trained if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    tmodel = teacher.model
    t_was_training = tmodel.training
    tmodel.eval()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    stopped, step = "steps", 0
    T = config.temperature
    order = torch.randperm(len(windows), generator=gen)
    cursor = 0
    try:
        with _progress(config.progress, config.steps, f"train {name}") as update:
            for step in range(config.steps):
                if config.minutes is not None and time.perf_counter() - start > config.minutes * 60:
                    stopped = "minutes"
                    break
                if cursor + config.batch_size > len(order):
                    order, cursor = torch.randperm(len(windows), generator=gen), 0
                idx = order[cursor:cursor + config.batch_size]
                cursor += config.batch_size
                batch = windows[idx]
                x, y = batch[:, :-1], batch[:, 1:]
                for group in opt.param_groups:
                    group["lr"] = config.lr * lr_factor(step, config.steps, config.warmup, "cosine")
                logits = student(input_ids=x).logits.float()
                vocab = logits.shape[-1]
                if config.loss == "kd":
                    with torch.inference_mode():
                        t_logits = tmodel(input_ids=x).logits.float()
                    t_logp = torch.log_softmax(t_logits.clone() / T, dim=-1).reshape(-1, vocab)
                    s_logp = torch.log_softmax(logits / T, dim=-1).reshape(-1, vocab)
                    loss = torch.nn.functional.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean") * T * T
                else:
                    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                opt.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ConfigError(f"the training loss became {value} at step {step}; lower lr (now {config.lr})")
                history.append({"step": step, "loss": round(value, 5)})
                update(f"loss {value:.3f}", 1)
            else:
                step = config.steps
    finally:
        tmodel.train(t_was_training)
    student.eval()
    seconds = time.perf_counter() - start
    params = int(sum(p.numel() for p in student.parameters()))
    lm = LanguageModel(name, student, teacher.tokenizer, {
        "source": "trained here", "teacher": teacher.name, "params": params, "layers": config.layers,
        "hidden": int(student.config.hidden_size), "weights": "fp32", "loss": config.loss, "init": config.init,
        "steps": step})
    return TrainResult(lm, config, history, step, seconds, stopped)


def save_lm(result: TrainResult, folder: str | Path, corpus: dict[str, Any] | None = None) -> Path:
    """Write the trained model (``save_pretrained``), its tokenizer and ``effstack_train.json`` atomically."""
    from .._files import atomic_dir, atomic_write_json

    final = Path(folder).expanduser()
    with atomic_dir(final) as tmp:
        result.lm.model.save_pretrained(str(tmp))
        result.lm.tokenizer.save_pretrained(str(tmp))
        summary = result.summary()
        summary["teacher"] = result.lm.meta.get("teacher")
        if corpus:
            summary["corpus"] = corpus
        atomic_write_json(tmp / "effstack_train.json", summary)
    return final
