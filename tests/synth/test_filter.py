"""Teacher filtering: exact kept indices per score from a teacher whose logits are its input, balance, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from effstack.errors import ConfigError, InputError
from effstack.synth import FilterResult, filter_by_teacher

# logits of 6 samples over 3 classes (the teacher passes its input through), and their own labels:
#   sample  logits         label  confidence  margin   teacher's top-1
#   0       [0, 3, 0]      1      0.909       +0.864   1 (agrees)
#   1       [0, 0, 0]      2      0.333        0       0 (disagrees; tied with its label)
#   2       [2, 2, -9]     0      0.500        0       0 (agrees; tied with class 1)
#   3       [1, 0, 0]      0      0.576       +0.364   0 (agrees)
#   4       [0, 0, 5]      0      0.007       -0.986   2
#   5       [1.5, 1.4, -9] 1      0.475       -0.050   0
X = np.array([[0, 3, 0], [0, 0, 0], [2, 2, -9], [1, 0, 0], [0, 0, 5], [1.5, 1.4, -9]], np.float32)
Y = np.array([1, 2, 0, 0, 0, 1])


def passthrough(classes: int = 3) -> torch.nn.Module:
    teacher = torch.nn.Linear(classes, classes, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.eye(classes))
    return teacher


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("score, keep, expected", [
    ("margin", 0.5, [0, 1, 3]),          # the margin-0 tie between 1 and 2 goes to the lower index
    ("agreement", 0.5, [0, 2, 3]),       # ... but agreement puts 2 (top-1 == label) ahead of 1
    ("confidence", 0.5, [0, 2, 3]),
    ("margin", 4 / 6, [0, 1, 2, 3]),
    ("agreement", 4 / 6, [0, 1, 2, 3]),  # among the disagreeing, margin: 1 (0) before 5 (-0.05)
    ("confidence", 4 / 6, [0, 2, 3, 5]),
    ("margin", 1.0, [0, 1, 2, 3, 4, 5]),
])
def test_kept_indices_are_exactly_the_top_fraction(score, keep, expected):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = filter_by_teacher(passthrough(), (X, Y), keep=keep, score=score)
    assert len(caught) == (1 if r.dropped_classes else 0)  # class 2 (sample 1 only) goes at 0.5 but for margin
    assert isinstance(r, FilterResult) and r.indices.tolist() == expected and r.indices.dtype == np.int64
    assert r.score == score and r.keep == pytest.approx(keep) and not r.balance and r.seconds >= 0
    assert r.threshold == pytest.approx(r.scores[expected].min())


def test_scores_match_their_definitions():
    p = softmax(X.astype(np.float64))
    own = p[np.arange(6), Y]
    other = np.where(np.eye(3, dtype=bool)[Y], -1.0, p).max(1)
    for score, want in (("confidence", own), ("margin", own - other), ("agreement", (p.argmax(1) == Y) * 1.0)):
        got = filter_by_teacher(passthrough(), (X, Y), keep=1.0, score=score).scores
        assert got.shape == (6,) and np.allclose(got, want, atol=1e-6), score
    assert filter_by_teacher(passthrough(), (X, Y), keep=1.0, score="agreement").scores.tolist() == [1, 0, 1, 1, 0, 0]


def test_class_balance_is_reported_and_a_dropped_class_warns():
    with pytest.warns(UserWarning, match=r"class\(es\) \[2\].*balance=True"):
        r = filter_by_teacher(passthrough(), (X, Y), keep=1 / 3)
    assert r.indices.tolist() == [0, 3]
    assert r.kept_per_class == {0: (1, 3), 1: (1, 2), 2: (0, 1)} and r.dropped_classes == [2]
    assert r.kept_fraction == pytest.approx({0: 1 / 3, 1: 0.5, 2: 0.0})
    doc = r.to_dict()
    assert doc["dropped_classes"] == [2] and doc["kept_per_class"]["2"] == [0, 1] and "scores" not in doc
    assert len(r.to_dict(with_scores=True)["scores"]) == 6


@pytest.mark.filterwarnings("error")  # balance never drops a class, so never warns
def test_balance_keeps_the_top_fraction_of_every_class():
    r = filter_by_teacher(passthrough(), (X, Y), keep=1 / 3, balance=True)
    # class 0 {2, 3, 4}: round(1) -> 3; class 1 {0, 5}: 1 -> 0; class 2 {1}: at least one -> 1
    assert r.balance and r.indices.tolist() == [0, 1, 3] and r.dropped_classes == []
    r = filter_by_teacher(passthrough(), (X, Y), keep=0.5, balance=True)
    assert r.indices.tolist() == [0, 1, 2, 3]  # class 0: round(1.5) = 2 -> 3, 2
    assert r.kept_per_class == {0: (2, 3), 1: (1, 2), 2: (1, 1)}


def test_deterministic_and_independent_of_batch_and_input_form():
    a = filter_by_teacher(passthrough(), (X, Y), keep=0.5)
    b = filter_by_teacher(passthrough(), (X, Y), keep=0.5, batch=1)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
    c = filter_by_teacher(passthrough(), dataset, keep=0.5)
    d = filter_by_teacher(passthrough(), (torch.from_numpy(X), list(Y)), keep=0.5)
    for other in (b, c, d):
        assert other.indices.tolist() == a.indices.tolist() and np.array_equal(other.scores, a.scores)
        assert other.threshold == a.threshold


def test_teacher_mode_is_restored_and_tied_pool_keeps_lowest_indices():
    teacher = passthrough().train()
    x = np.zeros((10, 3), np.float32)  # every sample scores the same
    r = filter_by_teacher(teacher, (x, np.arange(10) % 3), keep=0.3)
    assert teacher.training and r.indices.tolist() == [0, 1, 2]


@pytest.mark.parametrize("kwargs, match", [
    ({"keep": 0}, "keep must be a fraction in \\(0, 1\\], got 0"),
    ({"keep": 1.5}, "keep must be a fraction"),
    ({"keep": True}, "keep must be a fraction"),
    ({"keep": "0.5"}, "keep must be a fraction"),
    ({"score": "margn"}, "score must be one of margin, confidence, agreement, got 'margn'; Did you mean: margin"),
    ({"batch": 0}, "batch must be an integer >= 1"),
])
def test_bad_settings_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        filter_by_teacher(passthrough(), (X, Y), **kwargs)


class _Sums(torch.nn.Module):
    def forward(self, x):
        return x.sum(1)  # (B,): not logits per class


@pytest.mark.parametrize("teacher, data, error, match", [
    (passthrough(), (X, Y[:5]), InputError, "labels must be one per sample: x has 6 samples, y has shape \\(5,\\)"),
    (passthrough(), (X, np.array([0, 1, 2, 3, 0, 1])), InputError, "label 3 is outside the teacher's 3 classes"),
    (passthrough(), (X, Y.astype(np.float32)), InputError, "labels must be integer class indices"),
    (passthrough(), (X.astype(np.int64), Y), InputError, "x must be a float array"),
    (passthrough(), (np.full_like(X, np.nan), Y), InputError, "x holds NaN"),
    (passthrough(), X, InputError, "data must be an \\(x, y\\) pair"),
    (_Sums(), (X, Y), InputError, "the teacher must return logits \\(6, classes\\)"),
    (lambda x: x, (X, Y), ConfigError, "teacher must be a PyTorch nn.Module"),
])
def test_bad_inputs_are_one_line_errors(teacher, data, error, match):
    with pytest.raises(error, match=match) as info:
        filter_by_teacher(teacher, data)
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:filter_by_teacher kept no sample")  # an untrained teacher may drop classes
def test_benchmark_core_runs_on_a_tiny_size(load_benchmark):
    bench = load_benchmark("teacher_filter")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the benchmark trains: idle OpenMP workers spin on a shared CPU (20x slower here)
    try:
        doc = bench.run(bench.Settings(n=20, pool_factor=2, seeds=(0,), epochs=1, teacher_epochs=1, width=2,
                                       workers=1, progress=False))
    finally:
        torch.set_num_threads(threads)
    assert {r["arm"] for r in doc["rows"]} == set(bench.ARMS) and len(doc["summary"]) == 3
    assert all(r["train_samples"] == 20 for r in doc["rows"])
    assert all(set(line) == {"what", "figure", "spread"} and "|" not in "".join(line.values())
               for line in doc["readme"])
    assert "filtered" in bench.table(doc)
