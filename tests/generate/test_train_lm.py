"""The draft recipe on tiny models: the loss falls, kd and ce both train, the folder is written atomically and
loads with load_lm, the embedding starts from the teacher's, bad configs are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from effstack.errors import ConfigError, InputError
from effstack.generate import load_lm
from effstack.generate.train import TrainLMConfig, save_lm, train_lm

TEXTS = ["the quick brown fox jumps over the lazy dog " * 3, "one two three four five six seven eight " * 3] * 4
SMALL = dict(layers=1, hidden=16, heads=2, kv_heads=1, intermediate=32, context=16, batch_size=4, progress=False)


@pytest.mark.parametrize("loss", ["kd", "ce"])
def test_loss_falls_and_the_draft_shares_the_tokenizer(tiny_lm, loss):
    r = train_lm(tiny_lm, TEXTS, TrainLMConfig(steps=40, loss=loss, **SMALL))
    first = sum(h["loss"] for h in r.history[:5]) / 5
    last = sum(h["loss"] for h in r.history[-5:]) / 5
    assert r.steps == 40 and r.stopped == "steps" and last < 0.85 * first
    assert r.lm.tokenizer is tiny_lm.tokenizer and r.lm.model.config.vocab_size == tiny_lm.model.config.vocab_size


def test_seeded_and_embedding_from_the_teacher(tiny_lm):
    a = train_lm(tiny_lm, TEXTS, TrainLMConfig(steps=3, **SMALL)).lm.model
    b = train_lm(tiny_lm, TEXTS, TrainLMConfig(steps=3, **SMALL)).lm.model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    e0 = train_lm(tiny_lm, TEXTS, TrainLMConfig(steps=1, lr=1e-9, warmup=0, **SMALL)).lm.model
    t = tiny_lm.model.get_input_embeddings().weight.detach()
    s = e0.get_input_embeddings().weight.detach()
    # the student's token geometry follows the teacher's: pairwise similarities correlate strongly
    ts, ss = torch.nn.functional.normalize(t - t.mean(0), dim=1), torch.nn.functional.normalize(s - s.mean(0), dim=1)
    corr = torch.corrcoef(torch.stack([(ts @ ts.T).flatten(), (ss @ ss.T).flatten()]))[0, 1]
    assert corr > 0.7


def test_saved_folder_loads(tiny_lm, tmp_path):
    r = train_lm(tiny_lm, TEXTS, TrainLMConfig(steps=5, **SMALL), name="d")
    folder = save_lm(r, tmp_path / "draft", corpus={"texts": len(TEXTS)})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    meta = json.loads((folder / "effstack_train.json").read_text())
    assert meta["steps"] == 5 and meta["corpus"] == {"texts": 8} and len(meta["history"]) == 5
    lm = load_lm(str(folder))
    ids = torch.tensor([tiny_lm.encode("the quick brown fox")])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, r.lm.model(ids).logits, atol=1e-5)
    assert lm.tokenizer.get_vocab() == tiny_lm.tokenizer.get_vocab()


def test_bad_config_and_too_little_text(tiny_lm):
    with pytest.raises(ConfigError, match="heads"):
        TrainLMConfig(hidden=30, heads=4)
    with pytest.raises(ConfigError, match="loss must be"):
        TrainLMConfig(loss="mse")
    with pytest.raises(ConfigError, match="steps must be"):
        TrainLMConfig(steps=0)
    with pytest.raises(InputError, match="a window needs"):
        train_lm(tiny_lm, ["the cat"], TrainLMConfig(steps=1, **SMALL))


def test_layers_init_is_a_shallower_copy_of_the_teacher(tmp_path):
    from effstack.generate.tiny import tiny_llama
    from effstack.generate.train import layer_subset

    assert layer_subset(30, 4) == [0, 10, 19, 29] and layer_subset(5, 5) == [0, 1, 2, 3, 4] and layer_subset(3, 1) == [2]
    with pytest.raises(ConfigError, match="cannot be taken"):
        layer_subset(2, 3)
    teacher = tiny_llama(seed=0, layers=4)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    # lr ~0: the student is the teacher's layers 0 and 3, unchanged, with the teacher's embedding and head
    r = train_lm(teacher, TEXTS, TrainLMConfig(steps=1, lr=1e-12, warmup=0, init="layers",
                                               **{**SMALL, "layers": 2}))
    s = r.lm.model
    assert s.config.num_hidden_layers == 2 and s.config.hidden_size == teacher.model.config.hidden_size
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())  # teacher untouched
    sd = s.state_dict()
    for new, old in ((0, 0), (1, 3)):
        assert torch.allclose(sd[f"model.layers.{new}.mlp.down_proj.weight"],
                              before[f"model.layers.{old}.mlp.down_proj.weight"], atol=1e-6)
    assert torch.equal(sd["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert [m.self_attn.layer_idx for m in s.model.layers] == [0, 1]
    # it generates with a KV cache (layer indices renumbered) and survives save and load
    ids = torch.tensor([teacher.encode("the quick brown fox")])
    out = s.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4
    lm = load_lm(str(save_lm(r, tmp_path / "draft")))
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, s(ids).logits, atol=1e-5)
    # training moves the kept layers only; the frozen embedding stays the teacher's
    r2 = train_lm(teacher, TEXTS, TrainLMConfig(steps=5, init="layers", **{**SMALL, "layers": 2}))
    sd2 = r2.lm.model.state_dict()
    assert torch.equal(sd2["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert not torch.equal(sd2["model.layers.1.mlp.down_proj.weight"], before["model.layers.3.mlp.down_proj.weight"])
