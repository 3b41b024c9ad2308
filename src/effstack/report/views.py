"""How each README results block shows its file: one renderer per ``VIEW`` of ``<!-- results KIND/NAME VIEW -->``.

Each takes a results document (:func:`effstack.report.results.read_result`) and returns Markdown: a ladder, the
result rows, the ``readme`` figures list, or a table made for one benchmark's result. :mod:`.results` adds the
provenance line above it and places it in the README.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ArtifactError

__all__ = ["RENDERERS"]


def _view_ladder(doc: dict[str, Any]) -> str:
    from ..ladder.runner import LadderResult
    from .ladder import ladder_text

    result = LadderResult.from_dict(doc["result"].get("ladder", doc["result"]))
    spreads = [f"{r.step} {r.measured.spread_pct:.0f}%" for r in result.rungs
               if r.measured is not None and r.measured.spread_pct is not None]
    note = ("\n\nSpread of each measured rung's throughput across its repeats ((max - min) / median): "
            + ", ".join(spreads) + ".") if spreads else ""
    search = doc["result"].get("search") if isinstance(doc["result"], dict) else None
    if isinstance(search, dict) and search.get("recall_at_1") is not None:
        note += (f"\n\nIndex of the photos built with the bundle: {search['images']} images embedded in "
                 f"{search['embed_seconds']:.1f} s; near-duplicate recall@1 {search['recall_at_1']:.2f} "
                 f"(the fp32 PyTorch model's: {search['fp32_recall_at_1']:.2f}).")
    return "```\n" + ladder_text(result, width=70) + "\n```" + note


def _view_rows(doc: dict[str, Any]) -> str:
    from ..measure.row import ResultRow
    from .table import format_text

    rows = [ResultRow.from_dict(r) for r in doc["result"]["rows"] if isinstance(r, dict)]
    return "```\n" + format_text(rows).rstrip() + "\n```"


def _view_figures(doc: dict[str, Any]) -> str:
    lines = doc["result"].get("readme")
    if not isinstance(lines, list) or not lines:
        raise ArtifactError(f"result {doc['name']!r} has no 'readme' list of figures to show; pick a view")
    out = ["| what | figure | spread |", "|---|---|---|"]
    for item in lines:
        out.append(f"| {item['what']} | {item['figure']} | {item.get('spread') or '-'} |")
    return "\n".join(out)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _view_distill(doc: dict[str, Any]) -> str:
    r = doc["result"]["distill_benchmark"]
    args = doc["result"].get("args", {})
    rows = [(row["student"], row["summary"], " ".join(f"{g:+.2f}" for g in row["gain_per_seed"])
             if row["student"] != "labels" else "-") for row in r["rows"]]
    return (f"Teacher top-1 {r['teacher_top1']:.2f}; {args.get('labelled', '?')} labelled training digits, "
            f"{args.get('seeds', '?')} seeds; test top-1 as mean ± sd (range, n):\n\n"
            + _table(("student", "test top-1", "gain over labels-only, per seed"), rows))


def _view_ternary(doc: dict[str, Any]) -> str:
    r = doc["result"]["ternary_benchmark"]
    summary, speed, first = r["summary"], r["speed"], r["rows"][0]
    ran = ", ".join(f"{k} {v}" for k, v in first["ort_executed"].items())
    rows = [("fp32 top-1", summary["fp32_top1"]), ("ternary top-1 (PyTorch)", summary["ternary_top1"]),
            ("ternary exported, ONNX Runtime top-1", summary["ternary_ort_int8_top1"]),
            ("drop, fp32 to ternary (points)", summary["drop"]),
            ("worst drop on ONNX Runtime (points)", f"{max(x['ort_drop'] for x in r['rows']):.2f}"),
            ("packed weights / fp32 weights", f"{first['weights_ratio']:.3f} ({first['bits_per_weight']:g} bits a "
                                              f"weight, {first['packing']})"),
            ("kernels ONNX Runtime ran", ran),
            (f"ONNX Runtime b{speed['batch']} ternary-as-INT8 / fp32, {speed['rounds']} paired rounds",
             f"{speed['speedup_median']:.2f}x ({speed['speedup_min']:.2f}-{speed['speedup_max']:.2f})")]
    return _table(("what", "figure (mean ± sd (range, n) over seeds)"), rows)


def _view_sim2real(doc: dict[str, Any]) -> str:
    r = doc["result"]
    rows = [(f"{s['strength']:g}", f"{s['synthetic_top1']:.2f}", f"{s['real_top1']:.2f}", f"{s['ratio']:.3f}",
             "met" if s["meets_goal"] else "not met") for s in r["summary"]]
    seeds = sorted({row["model_seed"] for row in r["rows"]})
    return (f"Trained only on synthetic digits, scored on scikit-learn's real test split; reference trained on the "
            f"real training split (model seeds {seeds}):\n\n"
            + _table(("randomization strength", "synthetic-trained top-1", "real-trained top-1", "ratio",
                      "goal >= 0.9"), rows))


def _rate(rate: float | None, spread: dict[str, Any] | None) -> str:
    if rate is None:
        return "-"
    if not spread:
        return f"{rate:,.0f}/s"
    return f"{rate:,.0f}/s ({spread['min']:,.0f}-{spread['max']:,.0f}, n={spread['n']})"


def _view_quantize(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["result"]["quantize_benchmark"]:
        if "error" in r:
            rows.append((r["model"], r.get("engine", "-"), "error", "", "", "", "", r["error"][:80]))
            continue
        tp, sp = r.get("throughput", {}), r.get("throughput_spread", {})
        best = r.get("best_float") or "fp32"
        verdict = "accepted" if r["accepted"] else "rejected: " + r["reason"].split("; ", 1)[-1]
        rows.append((r["model"], r["engine"], f"{r['fp32_score']:.2f}", _num(r.get("int8_score"), ".2f"),
                     _num(r.get("drop"), ".2f"), f"{best} {_rate(tp.get(best), sp.get(best))}",
                     f"{_rate(tp.get('int8'), sp.get('int8'))} = {_num(r.get('speedup'), '.2f')}x", verdict))
    a = doc["result"].get("args", {})
    return (f"Each model trained {a.get('epochs', '?')} epochs on digits at {a.get('size', '?')}², INT8 with the "
            f"guard ({a.get('method', '?')}, at most {a.get('max_drop', '?')} point lost); speed at batch "
            f"{a.get('batch', '?')}, median of {a.get('repeats', '?')} repeats of {a.get('bench_seconds', '?')} s "
            "(range, n):\n\n"
            + _table(("model", "engine", "fp32 top-1", "int8 top-1", "drop", "best float", "int8", "verdict"), rows))


def _view_prune(doc: dict[str, Any]) -> str:
    r = doc["result"]["prune_benchmark"]
    rows = [("MACs", f"{r['macs_before']:,} -> {r['macs_after']:,} (x{r['flops_ratio']:.3f})"),
            ("parameters", f"{r['params_before']:,} -> {r['params_after']:,}"),
            ("top-1 on the real test digits", f"{r['top1_before']:.2f} -> {r['top1_after']:.2f}"),
            (f"{r['engine']} samples/s", f"{r['base_samples_per_s']:,.0f} -> {r['fast_samples_per_s']:,.0f}"),
            ("speed-up, median of paired rounds (range)",
             f"{r['speedup_median']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})")]
    return f"{r['model']} on {r['input']}, pruned with torch-pruning and fine-tuned:\n\n" + _table(
        ("what", "figure"), rows)


def _view_curve(doc: dict[str, Any]) -> str:
    c = doc["result"]["ceiling"]
    rows = [(b, f"{v['median_ms']:.1f}", f"{v['p10_ms']:.1f}-{v['p90_ms']:.1f}", f"{v['p99_ms']:.1f}", f"{v['cv']:.3f}",
             v["runs"], f"{int(b) * 1e3 / v['median_ms'] * c['instances']:.1f}")
            for b, v in sorted(c["curve"].items(), key=lambda kv: int(kv[0]))]
    return (f"Batch time with all {c['instances']} instance(s) of {c['threads_per_instance']} thread(s) busy (the curve "
            f"the ceiling is simulated on; batch cap {c['batch_cap']}):\n\n"
            + _table(("batch", "median ms", "p10-p90 ms", "p99 ms", "CV", "runs", "samples/s at the median"), rows))


def _spread_of(d: dict[str, Any], spec: str) -> str:
    return f"{format(d['median'], spec)} (min {format(d['min'], spec)}, max {format(d['max'], spec)}, n={d['n']})"


def _view_vectors(doc: dict[str, Any]) -> str:
    r = doc["result"]["result"]
    tuning = r.get("tuning") or {}
    rows = [("index", f"{r['kind']} ({tuning.get('param', '-')} {tuning.get('value', '-')}, tuned to recall@{r['k']})"),
            (f"recall@{r['k']} vs exact, {r['queries']:,} queries a round", _spread_of(r["recall"], ".3f")),
            ("single-query p50 ms", _spread_of(r["p50_ms"], ".3f")),
            ("single-query p99 ms", _spread_of(r["p99_ms"], ".3f")),
            ("FAISS alone, p99 ms", f"{r['faiss_only_p99_ms']:.3f}"),
            ("build + tune + save, s", f"{r['build_tune_save_s']:.0f}"), ("load, s", f"{r['load_s']:.1f}"),
            ("goal: recall@10 >= 0.95 at p99 <= 2 ms", "met" if r["pass"] else "not met")]
    return (f"{r['n']:,} synthetic vectors of {r['dim']} dimensions ({r['clusters']:,} Gaussian clusters, noise "
            f"{r['spread']:g} of a centre's norm); rounds of single queries:\n\n" + _table(("what", "figure"), rows))


def _view_planner(doc: dict[str, Any]) -> str:
    r = doc["result"]
    a, smart, full = r["acceptance"], r["smart"], r.get("exhaustive") or {}

    def pick(side: dict[str, Any]) -> str:
        c, m = side["best"]["candidate"], side["best"]["measurement"]
        return (f"{c['engine']} {c['precision']} b{c['batch']} {c['instances']}x{c['threads']}: "
                f"{m['throughput']:,.0f}/s, p99 {m['p99_ms']:.2f} ms")

    rows = [("grid", f"{a['grid_cells']} cells, p99 budget {smart['budget_ms']:g} ms"),
            ("default search", f"measured {smart['n_measured']} cells ({a['fraction_measured']:.0%}) in "
                               f"{smart['wall_s']:.0f} s; picked {pick(smart)}")]
    if full:
        rows.append(("exhaustive search", f"measured {full['n_measured']} cells in {full['wall_s']:.0f} s; picked "
                                          f"{pick(full)}"))
    rows.append(("default pick / exhaustive pick", (f"same configuration (its two measurements: "
                                                    f"{a['search_ratio']:.2f}x)") if a["same_pick"] else
                 f"paired re-measurement {a['paired_ratio']:.2f}x"))
    rows.append(("goal: <= 25% of the grid measured, pick within 5% of the exhaustive best",
                 "met" if a["pass"] else "not met"))
    return f"{r['model']}:\n\n" + _table(("what", "figure"), rows)


def _view_auto(doc: dict[str, Any]) -> str:
    a = doc["result"]["auto"]
    layouts = [str(n) for n in a["layouts"]]
    rows = []
    for i, r in enumerate(a["runs"]):
        cells = [f"{r['predicted_qps'][n]:.1f} / {r['measured_qps'][n] or 0:.1f}" for n in layouts]
        verdict = {True: "right", False: "wrong", None: "tie"}[r["ranking_right"]]
        rows.append((i, " then ".join(str(n) for n in r["order"]), *cells, verdict,
                     f"{r['auto_pick']} ({'right' if r['auto_pick_right'] else 'wrong'})"))
    return (f"{a['model']} {a['engine']} {a['precision']}, p99 budget {a['budget_ms']:g} ms ({a['budget_from']}); each "
            f"layout served for real, its rate searched from {a.get('search_start_qps', 0):.1f}/s; predicted / "
            f"measured samples/s; {a['summary']}:\n\n"
            + _table(("run", "order", *[f"{n} instance(s)" for n in layouts], "ranking", "auto's pick"), rows))


def _pcts_row(label: str, v: dict[str, Any] | None) -> tuple[str, ...]:
    v = v or {}
    return (label, str(v.get("n", v.get("count", 0))), _num(v.get("p50_ms"), ".2f"), _num(v.get("p99_ms"), ".2f"),
            _num(v.get("max_ms"), ".2f"))


def _checks(r: dict[str, Any]) -> str:
    return "\n".join(f"- {'pass' if ok else 'FAIL'}: {name}" for name, ok in r["checks"].items())


def _view_overload(doc: dict[str, Any]) -> str:
    """``benchmarks/serving_overload.py``: refusals under overload, seen by the server and by the clients."""
    r = doc["result"]
    s = r["server_refusals"]
    rows = [_pcts_row("503, client: from the real send", r["refused_from_sent"]),
            _pcts_row("503, client: from the scheduled send", r["refused_from_scheduled"]),
            _pcts_row("200, client: from the real send", r["admitted_from_sent"]),
            ("503, server: accept to transport (histogram, interpolated)", str(s["count"]), _num(s["p50_ms"], ".2f"),
             _num(s["p99_ms"], ".2f"), f"{_num(100 * s['within_goal_share'], '.2f')}% within 5 ms"
             if s.get("within_goal_share") is not None else "-")]
    head = (f"{r['model']} {r['precision']}, budget {r['budget_ms']:g} ms, capacity {r['capacity']['qps']:.1f}/s "
            f"({'given' if r['capacity']['given'] else 'measured'}), offered {r['rate_qps']:.1f}/s "
            f"({r['factor']:g}x) for {r['seconds']:g} s: {r['sent']} sent, {r['outcomes'].get('200', 0)} answered, "
            f"{r['outcomes'].get('503', 0)} refused ({100 * r['refused_share']:.1f}%)")
    return head + ":\n\n" + _table(("latency", "n", "p50 ms", "p99 ms", "max ms"), rows) + "\n\n" + _checks(r)


def _view_soak(doc: dict[str, Any]) -> str:
    """``benchmarks/serving_soak.py``: minutes below capacity, memory, errors and the id accounting."""
    r = doc["result"]
    d, ids = r["rss"], r["ids"]
    drift = "-" if d.get("max_drift") is None else f"{100 * d['max_drift']:+.2f}%"
    rows = [("RSS after the warm-up / at the end, MiB", f"{_num(d.get('start_mib'), '.1f')} / "
             f"{_num(d.get('end_mib'), '.1f')} (largest drift {drift})"),
            ("errors (of which admission 503s)", f"{r['errors']} ({r['refused']})"),
            ("ids: wrong / twice / missing", f"{ids['wrong_id']} / {ids['echoed_twice_or_more']} / {ids['missing']}"),
            ("server's success count / answers read", f"{r['server_success']:.0f} / {r['outcomes'].get('200', 0)}"),
            ("200 latency from the real send, p50 / p99 ms", f"{_num(r['latency_from_sent'].get('p50_ms'), '.2f')} / "
             f"{_num(r['latency_from_sent'].get('p99_ms'), '.2f')}")]
    head = (f"{r['model']} {r['precision']}, budget {r['budget_ms']:g} ms, capacity {r['capacity']['qps']:.1f}/s "
            f"({'given' if r['capacity']['given'] else 'measured'}), {r['rate_qps']:.1f}/s ({r['load']:g}x) for "
            f"{r['wall_s']:.0f} s, {r['sent']} requests")
    return head + ":\n\n" + _table(("what", "figure"), rows) + "\n\n" + _checks(r)


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "ladder": _view_ladder, "rows": _view_rows, "figures": _view_figures, "distill": _view_distill,
    "ternary": _view_ternary, "sim2real": _view_sim2real,
    "quantize": _view_quantize, "prune": _view_prune, "curve": _view_curve,
    "vectors": _view_vectors, "planner": _view_planner,
    "auto": _view_auto, "overload": _view_overload, "soak": _view_soak,
}
