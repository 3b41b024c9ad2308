"""``effstack generate``: registered, and a bad model is one line with exit code 2."""

from __future__ import annotations

from effstack.cli.main import main


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["generate", "serve", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no language model 'nope'" in err and "smollm2-135m" in err and len(err.strip().splitlines()) == 1


def test_bad_budget_is_a_one_line_error(capsys):
    assert main(["generate", "serve", "--model", "tiny", "--ttft-ms", "0"]) == 2
    assert "ttft_ms must be a positive number" in capsys.readouterr().err


def test_bare_generate_prints_help(capsys):
    assert main(["generate"]) == 2
    assert "serve" in capsys.readouterr().out
