"""The cascade: thresholds known by hand, ties, max-drop 0, grouped splits, costs, errors, the CLI on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from effstack.errors import ConfigError, InputError
from effstack.evaluate.cascade import (
    AGREEMENT,
    ACCURACY,
    ModelCost,
    choose_threshold,
    confidence,
    evaluate_cascade,
    split_calibration,
)


def _sigmoid(d: float) -> float:
    return 1.0 / (1.0 + math.exp(-d))


def _ranked(small_right: list[bool], big_right: list[bool], seed: int = 0):
    """Two-class logits whose small-model confidence falls with the rank (rank 0 most confident: margin 10, 9, ...),
    the samples shuffled; labels all 0. Returns (small, big, labels, confidence of each rank)."""
    n = len(small_right)
    d = np.arange(n, 0, -1, dtype=np.float64) + 0.0  # n, n-1, ..., 1: no ties
    small = np.where(np.array(small_right)[:, None], np.c_[d, np.zeros(n)], np.c_[np.zeros(n), d])
    big = np.where(np.array(big_right)[:, None], [[1.0, 0.0]], [[0.0, 1.0]])
    perm = np.random.default_rng(seed).permutation(n)
    return small[perm], big[perm], np.zeros(n, np.int64), [_sigmoid(v) for v in d]


# ranks 0..9; the small model is wrong at ranks 4 and 8, the big one at rank 1 (big alone: 90 %)
SMALL_RIGHT = [True, True, True, True, False, True, True, True, False, True]
BIG_RIGHT = [True, False, True, True, True, True, True, True, True, True]


def test_known_threshold_is_the_lowest_that_keeps_the_big_models_accuracy():
    small, big, y, conf = _ranked(SMALL_RIGHT, BIG_RIGHT)
    # correct answers when the first m ranks go to the small model: m=0..10 -> 9 9 10 10 10 9 9 9 9 8 8
    c = choose_threshold(small, big, y, max_drop_points=0.0)
    assert c.big_accuracy == 90.0 and c.small_accuracy == 80.0
    assert c.threshold == pytest.approx(conf[7], rel=1e-12)  # eight answered by the small model, 9 of 10 right
    assert (c.fraction_small, c.accuracy, c.scored_as) == (0.8, 90.0, ACCURACY)
    # the curve, lowest threshold first, ends with "big answers all"
    assert [round(f, 1) for _, f, _ in c.curve] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert [a for _, _, a in c.curve] == [80.0, 80.0, 90.0, 90.0, 90.0, 90.0, 100.0, 100.0, 100.0, 90.0, 90.0]
    assert c.curve[-1][0] == math.inf
    # one sample in ten is 10 points: allowing 10 admits all, allowing a hair less does not
    assert choose_threshold(small, big, y, 10.0).fraction_small == 1.0
    assert choose_threshold(small, big, y, 9.99).fraction_small == 0.8
    assert choose_threshold(small, big, y, "12%").fraction_small == 1.0  # 12 % of 90 = 10.8 points
    # the same threshold applied on the same split reproduces the calibration figures
    r = evaluate_cascade(small, big, y, c)
    assert (r.accuracy, r.fraction_escalated, r.big_accuracy, r.small_accuracy) == (90.0, pytest.approx(0.2), 90.0,
                                                                                  80.0)


def test_ties_go_to_one_model_together():
    # rank 0 confident and right; ranks 1 and 2 share one confidence, the first right, the second wrong
    small = np.array([[5.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    big = np.array([[1.0, 0.0]] * 4)
    y = np.zeros(4, np.int64)
    c = choose_threshold(small, big, y, max_drop_points=0.0)
    assert c.threshold == pytest.approx(_sigmoid(5.0)) and c.fraction_small == 0.25  # not 0.5: the tie is whole
    assert 0.5 not in [f for _, f, _ in c.curve]
    # a threshold exactly at the tied confidence lets both tied samples through (>=)
    r = evaluate_cascade(small, big, y, float(confidence(small)[1]))
    assert r.fraction_escalated == 0.25 and r.accuracy == 75.0


@pytest.mark.parametrize("metric", ["maxprob", "margin"])
@pytest.mark.parametrize("seed", range(5))
def test_max_drop_zero_never_loses_to_the_big_model_on_calibration(seed, metric):
    rng = np.random.default_rng(seed)
    n, k = 60, 5
    y = rng.integers(0, k, n)
    big = rng.standard_normal((n, k)) + 3.0 * np.eye(k)[y] * (rng.random(n) < 0.8)[:, None]
    small = rng.standard_normal((n, k)) + 2.0 * np.eye(k)[y] * (rng.random(n) < 0.6)[:, None]
    c = choose_threshold(small, big, y, 0.0, metric)
    assert c.accuracy >= c.big_accuracy
    r = evaluate_cascade(small, big, y, c)
    assert r.accuracy == c.accuracy and 1.0 - r.fraction_escalated == pytest.approx(c.fraction_small)
    # agreement: the big model scores 100 and the cascade must too
    a = choose_threshold(small, big, None, 0.0, metric)
    assert a.big_accuracy == 100.0 and a.accuracy == 100.0 and a.scored_as == AGREEMENT


def test_a_small_model_that_is_always_right_answers_everything():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 30)
    small = np.eye(4)[y] * rng.uniform(0.5, 4.0, (30, 1))
    big = rng.standard_normal((30, 4))
    c = choose_threshold(small, big, y, 0.0)
    assert c.fraction_small == 1.0 and c.accuracy == 100.0
    assert c.threshold == pytest.approx(confidence(small).min())
    cost_s, cost_b = ModelCost(seconds_per_sample=1e-3, macs=100_000_000), ModelCost(4e-3, 400_000_000)
    r = evaluate_cascade(small, big, y, c, cost_s, cost_b)
    assert r.fraction_escalated == 0.0
    assert r.cost("cascade", "ms") == pytest.approx(1000.0) and r.speedup() == pytest.approx(4.0)


def test_cost_per_thousand_queries():
    small = np.array([[3.0, 0.0], [0.1, 0.0], [0.2, 0.0], [4.0, 0.0]])  # two unsure samples escalate at 0.9
    big = np.array([[1.0, 0.0]] * 4)
    r = evaluate_cascade(small, big, None, 0.9, ModelCost(2e-3, 300_000_000, batch=8),
                         ModelCost(5e-3, 900_000_000, batch=8))
    assert r.fraction_escalated == 0.5
    assert r.cost("small", "ms") == pytest.approx(2000.0) and r.cost("big", "ms") == pytest.approx(5000.0)
    assert r.cost("cascade", "ms") == pytest.approx(2000.0 + 0.5 * 5000.0)
    assert r.cost("cascade", "gmac") == pytest.approx(300.0 + 0.5 * 900.0)
    assert r.speedup(unit="gmac") == pytest.approx(900.0 / 750.0)
    rows = {row["system"]: row for row in r.rows()}
    assert set(rows) == {"small alone", "big alone", "cascade"} and rows["big alone"]["speedup_vs_big"] == 1.0
    assert "cascade" in r.table() and json.dumps(r.to_dict())
    assert evaluate_cascade(small, big, None, 0.9).speedup() is None  # no costs: accuracy only


def test_margin_confidence():
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    assert confidence(np.array([[2.0, 1.0, 0.0]]), "margin")[0] == pytest.approx(p[0] - p[1])
    assert confidence(np.array([[1.0, 1.0]]), "margin")[0] == 0.0
    assert confidence(np.array([[7.0]]), "margin")[0] == 1.0


def test_grouped_split_keeps_groups_whole_and_is_deterministic():
    groups = np.repeat([f"photo{i}" for i in range(9)], [1, 2, 3, 4, 5, 1, 2, 3, 4])
    cal, test = split_calibration(len(groups), groups, 0.5, seed=3)
    assert not set(groups[cal]) & set(groups[test])
    assert sorted(np.r_[cal, test].tolist()) == list(range(len(groups)))
    assert len(cal) >= 0.5 * len(groups) and len(test) > 0
    again = split_calibration(len(groups), groups, 0.5, seed=3)
    assert np.array_equal(again[0], cal) and np.array_equal(again[1], test)
    cal2, test2 = split_calibration(10, None, 0.3, seed=1)
    assert len(cal2) == 3 and len(test2) == 7 and not set(cal2) & set(test2)


def test_bad_inputs_are_one_line_errors():
    a = np.zeros((4, 3))
    cases = [
        (InputError, "same shape", lambda: choose_threshold(a, np.zeros((4, 2)), None)),
        (InputError, "same shape", lambda: evaluate_cascade(a, np.zeros((5, 3)), None, 0.5)),
        (ConfigError, "non-negative", lambda: choose_threshold(a, a, None, -1.0)),
        (ConfigError, "max drop", lambda: choose_threshold(a, a, None, "lots")),
        (ConfigError, "metric must be one of", lambda: choose_threshold(a, a, None, 0.5, "entropy")),
        (InputError, "one integer per sample", lambda: choose_threshold(a, a, np.zeros(3, int))),
        (InputError, "finite", lambda: choose_threshold(np.full((4, 3), np.nan), a, None)),
        (InputError, "non-empty", lambda: choose_threshold(np.zeros((0, 3)), np.zeros((0, 3)), None)),
        (ConfigError, "NaN", lambda: evaluate_cascade(a, a, None, float("nan"))),
        (InputError, "one id per sample", lambda: split_calibration(4, [0, 1, 2])),
        (InputError, "two groups", lambda: split_calibration(4, [7, 7, 7, 7])),
        (InputError, "two samples", lambda: split_calibration(1)),
        (ConfigError, "between 0 and 1", lambda: split_calibration(4, None, 1.0)),
        (ConfigError, "positive", lambda: ModelCost(seconds_per_sample=0.0)),
    ]
    for kind, words, call in cases:
        with pytest.raises(kind, match=words) as info:
            call()
        assert "\n" not in str(info.value)


def test_cli_on_two_tiny_models(tmp_path, capsys):
    from effstack.cli.main import main
    from effstack.models.spec import InputSpec
    from effstack.report.results import RENDERERS

    x = InputSpec((3, 32, 32)).image_like(24, seed=5)
    data, out, page = tmp_path / "d.npz", tmp_path / "c.json", tmp_path / "c.html"
    np.savez(data, x=x, groups=np.repeat(np.arange(8), 3))
    code = main(["cascade", "effstack.testing:tiny_cnn", "effstack.testing:tiny_resnet", "--data", str(data),
                 "--engine", "torch", "--batches", "1,2", "--seconds", "0.02", "--repeats", "2", "--max-drop", "0",
                 "--json", str(out), "--html", str(page)])
    text = capsys.readouterr().out
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert (doc["small"], doc["big"], doc["engine"], doc["scored_as"]) == ("tiny_cnn", "tiny_resnet", "torch",
                                                                           AGREEMENT)
    assert doc["split"]["grouped"] and doc["split"]["groups"] == 8
    assert doc["split"]["calibration"] + doc["split"]["test"] == 24
    assert doc["calibration"]["accuracy"] >= doc["calibration"]["big_accuracy"]  # max drop 0
    assert doc["calibration"]["curve"][-1] == {"threshold": None, "fraction_small": 0.0, "accuracy": 100.0}
    assert [r["system"] for r in doc["rows"]] == ["small alone", "big alone", "cascade"]
    test = doc["test"]
    assert test["small_cost"]["seconds_per_sample"] > 0 and test["big_cost"]["batch"] in (1, 2)
    assert test["small_cost"]["macs"] < test["big_cost"]["macs"]
    assert set(test["small_cost"]["throughputs"]) == {"1", "2"}
    assert {"speedup_min", "met"} <= set(doc["goal"])
    assert all(set(line) == {"what", "figure", "spread"} for line in doc["readme"]) and len(doc["readme"]) >= 5
    table = RENDERERS["figures"]({"name": "cascade", "result": doc})
    assert table.startswith("| what | figure | spread |") and "GMAC per 1,000 queries" in table
    assert "agreement" in text and "cascade" in text and "<svg" in page.read_text()


def test_cli_rejects_data_of_the_wrong_size(tmp_path, capsys):
    from effstack.cli.main import main

    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 3, 16, 16), np.float32))
    assert main(["cascade", "effstack.testing:tiny_cnn", "effstack.testing:tiny_resnet", "--data", str(data),
                 "--engine", "torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "takes (3, 32, 32)" in err
    assert main(["cascade", "effstack.testing:tiny_cnn", "effstack.testing:tiny_resnet", "--data", str(data),
                 "--max-drop", "-1"]) == 2
    assert "non-negative" in capsys.readouterr().err


def _photo_cascade(tmp_path, *extra):
    """``effstack cascade`` of two tiny models on two photos' variants, timed briefly: ``(exit code, document)``."""
    pytest.importorskip("effstack.data.photos")
    pytest.importorskip("sklearn")
    from effstack.cli.main import main

    out = tmp_path / "c.json"
    code = main(["cascade", "effstack.testing:tiny_cnn", "effstack.testing:tiny_resnet", "--data",
                 "photos:sklearn?n=3", "--engine", "torch", "--batches", "2", "--seconds", "0.02", "--repeats", "1",
                 "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if code == 0 else None


def test_cli_on_photos_keeps_each_photos_variants_on_one_side(tmp_path):
    code, doc = _photo_cascade(tmp_path)
    assert code == 0
    assert doc["split"] == {"calibration": 3, "test": 3, "grouped": True, "seed": 0, "groups": 2}
    assert doc["scored_as"] == AGREEMENT


def test_held_out_keeps_only_calibration_side_photos_of_the_same_set():
    from argparse import Namespace

    from effstack.cli.cascade import _held_out

    groups = np.array([0, 0, 1, 1, 2, 2])
    test = np.array([2, 3])  # photo 1's variants
    same = Namespace(data="photos:all?n=2", train_data="photos:all?n=4&split=train")
    keep = _held_out(same, np.array([0, 1, 2, 1, 0]), groups, test)
    assert keep.tolist() == [True, False, True, False, True]
    other = Namespace(data="photos:all?n=2", train_data="photos:sklearn?n=4&split=train")
    assert _held_out(other, np.array([0, 1]), groups, test) is None  # group ids of another set mean other photos
    assert _held_out(Namespace(data="d.npz", train_data="t.npz"), None, None, test) is None


def test_cli_distills_the_small_model_on_calibration_side_photos_only(tmp_path, capsys, monkeypatch):
    import effstack.ladder.pipeline as pipeline

    seen = {}
    real = pipeline.distill_student

    def spy(teacher, student, inputs, **kw):
        seen["inputs"], seen["kw"] = np.array(inputs), kw
        return real(teacher, student, inputs, **kw)

    monkeypatch.setattr(pipeline, "distill_student", spy)
    code, doc = _photo_cascade(tmp_path, "--distill-epochs", "1", "--train-data", "photos:sklearn?n=4&split=train",
                               "--small-size", "16")
    assert code == 0
    text = capsys.readouterr().out
    s = doc["student"]
    assert doc["small"] == "tiny_cnn-distilled" and s["epochs"] == 1 and s["runs_at"] == [16, 16]
    assert (s["held_out"], s["train_inputs"], s["test_photos_unseen"]) == (4, 4, True)
    assert seen["inputs"].shape == (4, 3, 32, 32) and seen["kw"]["student_size"] == 16
    assert doc["split"] == {"calibration": 3, "test": 3, "grouped": True, "seed": 0, "groups": 2}
    assert doc["readme"][0]["what"] == "small model" and "unseen" in doc["readme"][0]["figure"]
    assert "distilled from the big one at 16x16" in text
    # the test photo's edits are the ones left out: the kept ones are the calibration photo's training edits
    from effstack.cli.cascade import _read
    from effstack.evaluate.cascade import split_calibration
    from effstack.models import load_model

    big = load_model("effstack.testing:tiny_resnet")
    _, _, groups = _read("photos:sklearn?n=3", big)
    cal, _ = split_calibration(len(groups), groups, 0.5, 0)
    xt, _, gt = _read("photos:sklearn?n=4&split=train", big)
    np.testing.assert_array_equal(seen["inputs"], xt[gt == groups[cal][0]])


def test_cli_small_size_alone_adapts_without_training(tmp_path):
    code, doc = _photo_cascade(tmp_path, "--small-size", "16")
    assert code == 0
    assert doc["small"] == "tiny_cnn@16" and doc["student"] == {"epochs": 0, "runs_at": [16, 16]}
    assert "at 16x16" in doc["readme"][0]["figure"] and "not retrained" in doc["readme"][0]["figure"]


@pytest.mark.parametrize("extra, words", [
    (["--distill-epochs", "2"], "needs --train-data"),
    (["--train-data", "photos:sklearn?split=train"], "only read to distill"),
    (["--distill-epochs", "-1"], "0 or more"),
    (["--small-size", "4"], "at least 8 pixels"),
])
def test_cli_student_options_are_checked_before_loading(extra, words, capsys):
    from effstack.cli.main import main

    assert main(["cascade", "no.such:model", "effstack.testing:tiny_resnet", "--data", "d.npz"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err
