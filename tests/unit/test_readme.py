"""The README's examples do what it says: its Python examples run and print what the README shows (where that
is deterministic), its command lines parse with the flags they document, and every flag it mentions exists."""

from __future__ import annotations

import argparse
import ast
import io
import itertools
import re
import shlex
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _text() -> str:
    return README.read_text()


def _blocks(lang: str = "python") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _text(), flags=re.S)


def _documented_prints(code: str) -> list[tuple[int, str | None]]:
    """``(line, expected)`` for every top-level ``print(...)`` statement of ``code``, in order; ``expected`` is
    the comment at the end of its last line (what the README says it prints), or None."""
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(code).readline) if tok.type == tokenize.COMMENT}
    prints = []
    for node in ast.parse(code).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                getattr(node.value.func, "id", None) == "print":
            prints.append((node.lineno, comments.get(node.end_lineno)))
    return prints


_PRINTED: dict[int, list[str]] = {}


def _run_block(index: int) -> list[str]:
    """What each ``print()`` of the block printed, one string per call (run once per test session; libraries'
    own progress output on stdout is not the example's)."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    if index not in _PRINTED:
        printed: list[str] = []

        def record(*args, sep=" ", end="\n", **_):
            printed.append(sep.join(map(str, args)) + end)

        exec(compile(_blocks()[index], f"README.md[python {index}]", "exec"), {"print": record})
        _PRINTED[index] = [p.rstrip("\n") for p in printed]
    return _PRINTED[index]


def test_readme_has_python_examples_with_documented_output():
    blocks = _blocks()
    assert blocks
    documented = [e for b in blocks for _, e in _documented_prints(b) if e]
    assert "(8, 10) {'int8': 4}" in documented  # the parser finds what the README shows


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_python_example_prints_what_the_readme_shows(index):
    code = _blocks()[index]
    prints = _documented_prints(code)
    out = _run_block(index)
    assert len(out) == len(prints), f"one line per print() expected, got {out}"
    for (line, expected), got in zip(prints, out):
        assert got.strip(), f"README.md[python {index}] line {line} printed nothing"
        if expected is not None:
            assert got.strip() == expected, f"README.md[python {index}] line {line}"


def test_readme_bench_example_reports_every_cell_it_asks_for():
    """The bench example's output is timing (not written in the README), but which rows it prints is not."""
    index, call = next((i, node) for i, code in enumerate(_blocks()) for node in ast.walk(ast.parse(code))
                       if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "bench")
    asked = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("engines", "precisions", "batches")}
    out = _run_block(index)
    rows = next(ast.literal_eval(line) for line in out if line.startswith("[("))
    assert [r[:3] for r in rows] == list(itertools.product(asked["engines"], asked["precisions"], asked["batches"]))
    assert all(isinstance(r[3], int) and r[3] > 0 for r in rows)


# -- command lines ------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from effstack.cli.main import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_parser(words: list[str]) -> tuple[argparse.ArgumentParser, str]:
    """The (sub)parser ``effstack WORDS...`` ends up in, and its name."""
    parser, name = _parser(), "effstack"
    for word in words:
        sub = _subcommands(parser).get(word)
        if sub is None:
            break
        parser, name = sub, f"{name} {word}"
    return parser, name


def _has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def _bash_commands() -> list[str]:
    """Every command line in the README's bash blocks (continuations joined, ``;`` split, comments dropped)."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(";"):
                words = shlex.split(part, comments=True)
                if words:
                    commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


def _effstack_commands() -> list[str]:
    return [c for c in _bash_commands() if c.startswith("effstack ")]


def test_readme_has_command_line_examples():
    assert len(_effstack_commands()) >= 20
    assert any(c.startswith("make ") for c in _bash_commands())


@pytest.mark.parametrize("command", _effstack_commands())
def test_readme_command_lines_parse_with_the_flags_they_document(command, capsys):
    words = [w.strip("[]") for w in shlex.split(command)[1:]]  # "[--exhaustive]": an optional flag
    sub, name = _command_parser(words)
    assert sub is not _parser() and name != "effstack", f"unknown command: {command}"
    help_text = sub.format_help()
    for flag in [w.split("=", 1)[0] for w in words if w.startswith("--")]:
        assert _has_flag(help_text, flag), f"{name} --help does not list {flag} (README: {command})"
    try:
        args = _parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"README command does not parse: {command}\n{capsys.readouterr().err}")
    assert callable(getattr(args, "func", None))


def _inline_code(text: str | None = None) -> list[str]:
    spans = re.findall(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", _text() if text is None else text)
    return [" ".join(span.split()) for span in spans]


def test_readme_inline_commands_use_flags_their_command_has():
    inline = [c for c in _inline_code() if c.startswith("effstack ")]
    assert any(c.startswith("effstack demo digits") for c in inline)
    for command in inline:
        words = command.split()[1:]
        sub, name = _command_parser(words)
        assert name != "effstack", f"unknown command: {command}"
        for flag in FLAG.findall(command):
            assert _has_flag(sub.format_help(), flag), f"{name} --help does not list {flag} (README: {command})"


def test_every_flag_the_readme_mentions_exists_in_some_command():
    helps = []

    def collect(parser: argparse.ArgumentParser) -> None:
        helps.append(parser.format_help())
        for sub in _subcommands(parser).values():
            collect(sub)

    collect(_parser())
    # the results tables' rows name benchmark scripts and their own flags (``--spread 1.0``): not effstack's
    prose = "\n".join(line for line in _text().splitlines() if not line.startswith("|"))
    spans = [s for s in _inline_code(prose) if not s.startswith(("python ", "pip ", "make ", "OUT="))]
    mentioned = sorted({f for s in spans for f in FLAG.findall(s)} | {f for c in _effstack_commands()
                                                                       for f in FLAG.findall(c)})
    assert "--instances" in mentioned and "--task" in mentioned
    missing = [f for f in mentioned if not any(_has_flag(h, f) for h in helps)]
    assert not missing, f"the README mentions flags no effstack command has: {missing}"


def test_readme_make_targets_and_benchmark_scripts_exist():
    """``make X`` targets are in the Makefile; ``python benchmarks/...`` scripts are in the repository (not run)."""
    makefile = (ROOT / "Makefile").read_text()
    targets = {w for c in _bash_commands() if c.startswith("make ") for w in shlex.split(c)[1:]}
    targets |= set(re.findall(r"`make (\w[\w-]*)`", _text()))
    assert {"demo", "test", "install"} <= targets
    for target in targets:
        assert re.search(rf"^{target}\s*:", makefile, flags=re.M), f"make {target}: no such Makefile target"
    assert (ROOT / "Makefile").read_text().count("effstack demo") >= 1  # `make demo` runs `effstack demo`
    scripts = set(re.findall(r"(?:python3?|bash|OUT=\S+ bash) (benchmarks/[\w./-]+)", _text()))
    assert scripts
    for script in scripts:
        assert (ROOT / script).is_file(), f"README names {script}, which does not exist"


def test_readme_engine_table_covers_what_each_installed_engine_runs():
    """Each engine the README's table lists is registered, and every precision it runs here is documented
    (the table may list more: bf16 needs native kernels this CPU may lack)."""
    from effstack.engines import ENGINES, get_engine
    from effstack.errors import EngineUnavailableError, MissingDependencyError

    table = re.search(r"## Engines\n\n(.*?)\n\n", _text(), flags=re.S).group(1)
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", table, flags=re.M)}
    assert set(rows) == set(ENGINES.names())
    for name, cell in rows.items():
        if cell.strip() == "any":
            continue
        documented = set(re.findall(r"\b(fp32|bf16|fp16|int8)\b", cell))
        try:
            engine = get_engine(name)
        except (MissingDependencyError, EngineUnavailableError):
            continue
        assert set(engine.precisions) <= documented, f"{name} runs {engine.precisions}, README says {cell.strip()}"
