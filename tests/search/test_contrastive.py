"""Contrastive training: the loss, the edits, and ``effstack train-embedder`` end to end (tiny settings)."""

from __future__ import annotations

import numpy as np
import pytest

from effstack.cli.main import main
from effstack.errors import ConfigError
from effstack.search.contrastive import (FACTORY, ContrastiveConfig, augment_copies, batch_indices, nt_xent,
                                        synthetic_photo)


def test_nt_xent_prefers_matching_views():
    import torch

    z = torch.eye(4)
    good = nt_xent(z, z.clone(), 0.2)
    bad = nt_xent(z, z.roll(1, 0), 0.2)
    assert float(good) < float(bad)


def test_config_is_checked():
    with pytest.raises(ConfigError, match="batch must be at least 2"):
        ContrastiveConfig(batch=1)
    with pytest.raises(ConfigError, match="give synthetic images"):
        ContrastiveConfig(synthetic=0)
    with pytest.raises(ConfigError, match="images_share"):
        ContrastiveConfig(images_share=1.5)


def test_each_batch_holds_the_users_share_without_repeats():
    rng = np.random.default_rng(0)
    for n_syn, n_user, batch, share, want_user in [(4000, 21, 96, 0.25, 21), (4000, 200, 96, 0.25, 24),
                                                   (4000, 0, 96, 0.25, 0), (0, 30, 16, 0.25, 16),
                                                   (10, 21, 31, 0.25, 21)]:  # too few synthetic: fill with the user's
        idx = batch_indices(rng, n_syn, n_user, batch, share)
        assert len(idx) == batch == len(set(idx.tolist()))
        assert ((idx >= n_syn) & (idx < n_syn + n_user)).sum() == want_user
        assert idx.min() >= 0 and idx.max() < n_syn + n_user


def test_edits_and_photos_are_deterministic():
    a = synthetic_photo(np.random.default_rng(3))
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    assert (a == synthetic_photo(np.random.default_rng(3))).all()
    copies = augment_copies(a, 4, seed=1)
    assert len(copies) == 4 and all(c.ndim == 3 and c.shape[2] == 3 for c in copies)


def test_train_embedder_cli_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "emb.pt"
    assert main(["train-embedder", "--out", str(out), "--steps", "2", "--batch", "4", "--synthetic", "8"]) == 0
    assert "use it: effstack index build" in capsys.readouterr().out
    from effstack.models.spec import ModelSpec
    from effstack.search import load_embedder

    emb = load_embedder(ModelSpec(FACTORY, weights=str(out)), engine="torch")
    assert emb.dim == 128 and emb.layer == "output"
