import numpy as np
import pytest

from effstack.errors import ConfigError, InputError
from effstack.evaluate import (
    MaxDrop,
    agreement,
    check_labels,
    cosine_similarity,
    parse_max_drop,
    recall_at_k,
    snr_db,
    top1,
)


def test_top1_and_agreement():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1(logits, np.array([1, 1, 1])) == pytest.approx(200 / 3)
    assert agreement(logits, logits * 3) == 100.0
    assert agreement(logits, -logits) == 0.0


def test_labels_outside_classes_is_one_line_error():
    with pytest.raises(InputError, match="outside the model's 2 classes") as e:
        top1(np.zeros((2, 2)), np.array([0, 5]))
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="one integer per sample"):
        check_labels(np.array([0]), 2, 2)


def test_cosine_recall_snr():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((50, 8))
    assert cosine_similarity(e, e) == pytest.approx(1.0)
    assert recall_at_k(e, e, 5) == 100.0
    assert recall_at_k(rng.standard_normal((50, 8)), e, 5) < 50.0
    assert snr_db(e, e) == float("inf")
    assert snr_db(e + 0.1 * e, e) == pytest.approx(20.0, abs=1e-6)
    with pytest.raises(InputError):
        snr_db(e[:3], e)


def test_parse_max_drop():
    assert parse_max_drop("1.0") == MaxDrop(1.0)
    assert parse_max_drop("1%").allowed(80.0) == pytest.approx(0.8)
    assert parse_max_drop(2).allowed(80.0) == 2.0
    assert str(parse_max_drop("0.5%")) == "0.5%"
    for bad in ("abc", "-1", "%"):
        with pytest.raises(ConfigError):
            parse_max_drop(bad)


def test_score_is_the_guard_and_ladder_rule():
    from effstack.evaluate.accuracy import agreement, recall_at_k, score, top1

    rng = np.random.default_rng(0)
    out, ref = rng.standard_normal((20, 5)), rng.standard_normal((20, 5))
    y = rng.integers(0, 5, 20)
    assert score(out, ref, y) == top1(out, y)
    assert score(out, ref) == agreement(out, ref)
    assert score(out, ref, y, task="embedding") == recall_at_k(out, ref, 10)  # labels unused for embeddings
