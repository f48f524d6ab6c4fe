"""What-if sweeps: --vary grammar, cartesian points, fixed and solver evaluation, caching, CLI, compare."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from planner.app.scenario import load_scenario, parse_tokens, scenario_from_dict
from planner.app.whatif import parse_varies, parse_vary, points, sweep
from planner.catalog.loader import load_gpus
from planner.core.errors import RequestError

ROOT = Path(__file__).resolve().parents[2]
CHATBOT = ROOT / "examples" / "chatbot-rtx4090" / "scenario.yaml"
DOCS = ROOT / "examples" / "document-pipeline-4xa100" / "scenario.yaml"


# --------------------------------------------------------------------------- grammar


def test_rate_range_with_count_is_evenly_spaced_ends_included() -> None:
    v = parse_vary("rate=1..40:10")
    assert v.dim == "rate" and len(v.values) == 10
    step = (40 - 1) / 9  # 10 points, both ends included
    assert v.values[0] == 1 and v.values[-1] == 40
    assert v.values[1] == pytest.approx(1 + step)


def test_range_without_count_defaults() -> None:
    assert len(parse_vary("rate=1..40").values) == 10  # floats: DEFAULT_POINTS
    assert parse_vary("concurrency=1..5").values == (1, 2, 3, 4, 5)  # small integer range: every value
    assert parse_vary("tp=1..8").values == (1, 2, 4, 8)  # tp / batch: the powers of two inside
    assert parse_vary("batch=3..40").values == (4, 8, 16, 32)


def test_context_accepts_k_suffix() -> None:
    # k = 1024 tokens (vLLM's 8K/32K/128K contexts are 8192/32768/131072)
    assert parse_vary("context=8k,32k,128k").values == (8 * 1024, 32 * 1024, 128 * 1024)
    assert parse_vary("max_model_len=4096").dim == "context"
    assert parse_tokens("1.5k") == 1536
    assert parse_vary("prompt=0,2k").values == (0, 2048)


def test_image_values_and_range() -> None:
    v = parse_vary("image=none,640x480")
    assert v.values[0] is None and (v.values[1].width, v.values[1].height) == (640, 480)
    r = parse_vary("image=640x480..1680x2240:3")
    # midpoint: ((640 + 1680) / 2, (480 + 2240) / 2)
    assert [str(s) for s in r.values] == ["640x480", "1160x1360", "1680x2240"]


def test_gpu_aliases_resolve_and_slo_groups_join_with_plus() -> None:
    assert parse_vary("gpu=H100,4090").values == ("H100-SXM-80GB", "RTX-4090-24GB")
    s = parse_vary("slo=ttft_p95=500ms,ttft_p95=1s+tpot_p95=50ms")
    assert s.values == (("ttft_p95=500ms",), ("ttft_p95=1s", "tpot_p95=50ms"))


@pytest.mark.parametrize("text,needle", [
    ("colour=red", "is not one of"),
    ("rate", "DIM=V1,V2"),
    ("rate=5..1", "goes down"),
    ("rate=1..5:0", "between 1"),
    ("rate=1..5:x", "not an integer"),
    ("rate=abc", "not a number"),
    ("rate=-1", "positive"),
    ("precision=fp4", "not one of"),
    ("context=huge", "token count"),
    ("tp=1.5", "not an integer"),
    ("rate=1,1", "given twice"),
    ("slo=fast", "METRIC_STAT=VALUE"),
])
def test_bad_vary_is_a_one_line_request_error(text: str, needle: str) -> None:
    with pytest.raises(RequestError) as exc:
        parse_vary(text)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_duplicate_and_exclusive_dimensions() -> None:
    with pytest.raises(RequestError, match="given twice"):
        parse_varies(["rate=1,2", "rate_per_s=3"])
    with pytest.raises(RequestError, match="exclude each other"):
        parse_varies(["rate=1", "concurrency=2"])


def test_points_are_the_cartesian_product_first_dimension_outermost() -> None:
    pts = points(parse_varies(["precision=bf16,int8", "rate=1,2,3"]))
    assert len(pts) == 2 * 3
    assert [(p["precision"], p["rate"]) for p in pts[:4]] == [("bf16", 1), ("bf16", 2), ("bf16", 3), ("int8", 1)]
    assert points([]) == [{}]


# --------------------------------------------------------------------------- fixed mode


def test_fixed_rate_sweep_cost_per_request_and_saturation() -> None:
    sc = load_scenario(CHATBOT)
    res = sweep(sc, parse_varies(["batch=4", "rate=0.5,1,2,50"]), fixed=True)
    price = load_gpus().get("RTX-4090").price.price_usd_per_gpu_hour
    by_rate = {r["rate_per_s"]: r for r in res.rows}
    # $/1k requests = $/h / (requests/s x 3600 s/h) x 1000
    assert by_rate[0.5]["cost_per_1k_requests"] == pytest.approx(price / (0.5 * 3600) * 1000, rel=1e-3)
    assert by_rate[0.5]["cost_per_hour"] == pytest.approx(price)
    cap = by_rate[0.5]["max_requests_per_s"]
    for rate, r in by_rate.items():
        if rate < cap:
            assert not r["saturated"]
        else:
            assert r["saturated"] and not r["feasible"] and r["binding"].startswith("load:")
            assert r["cost_per_1k_requests"] is None
    assert by_rate[50]["status"] == "saturated"
    # Below saturation, more traffic never lowers p95 TTFT.
    ok = [by_rate[x]["ttft_p95_ms"] for x in sorted(by_rate) if not by_rate[x]["saturated"]]
    assert ok == sorted(ok)
    json.dumps(res.to_json(), allow_nan=False)  # saturated rows carry None, not inf


def test_precision_dimension_reaches_the_memory_model() -> None:
    sc = load_scenario(CHATBOT)
    rows = sweep(sc, parse_varies(["precision=bf16,int8"]), fixed=True).rows
    # Qwen2.5-VL-7B decoder linear layers (config.json: hidden 3584, intermediate 18944, 28 layers, 28 heads,
    # 4 KV heads x 128): q,o 3584^2 each, k,v 3584 x 512 each, gate/up/down 3 x 3584 x 18944.
    per_layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944
    saved_gib = 28 * per_layer * (2 - 1) / 2**30  # W8A8 stores those weights in 1 byte instead of 2
    diff = rows[0]["weights_gib"] - rows[1]["weights_gib"]
    assert diff == pytest.approx(saved_gib, rel=0.02)


def test_context_dimension_and_model_limit() -> None:
    sc = load_scenario(CHATBOT)
    rows = sweep(sc, parse_varies(["context=8k,32k,128k"]), fixed=True, overrides={"concurrency": 1}).rows
    assert [r["max_model_len"] for r in rows] == [8192, 32768, 131072]
    assert rows[0]["feasible"] and rows[1]["feasible"]
    # Qwen2.5-VL-7B's max_position_embeddings is 128000 < 131072: vLLM refuses the cap.
    assert rows[2]["status"] == "unsupported" and "128000" in rows[2]["binding"]
    # vLLM's KV cache is what is left, whatever the cap: 57,344 bytes per token
    # (2 x 28 layers x 4 KV heads x 128 x 2 bytes), in 16-token blocks.
    for r in rows[:2]:
        assert r["kv_capacity_tokens"] * 57344 == pytest.approx(r["kv_cache_gib"] * 2**30, abs=16 * 57344 + 2**20)


def test_workload_and_image_dimensions_change_visual_tokens() -> None:
    sc = load_scenario(CHATBOT)
    rows = sweep(sc, parse_varies(["workload=document-vqa,visual-reasoning,captioning"]), fixed=True).rows
    # Qwen2-VL smart_resize: each side rounded to a multiple of 28 px, one token per 28x28 block,
    # plus <|vision_start|> and <|vision_end|>:  1680x2240 -> 60 x 80; 640x480 -> 23 x 17; 480x360 -> 17 x 13.
    assert [r["visual_tokens"] for r in rows] == [60 * 80 + 2, 23 * 17 + 2, 17 * 13 + 2]
    assert [r["prompt_tokens"] for r in rows] == [64, 128, 0]  # the presets' text tokens
    img = sweep(sc, parse_varies(["image=none,1680x2240"]), fixed=True).rows
    assert img[0]["visual_tokens"] == 0 and img[1]["visual_tokens"] == 60 * 80 + 2
    assert img[0]["image"] == "none"


def test_slo_dimension_decides_feasibility() -> None:
    sc = load_scenario(CHATBOT)
    rows = sweep(sc, parse_varies(["slo=ttft_p95=1ms,ttft_p95=60s"]), fixed=True).rows
    assert not rows[0]["feasible"] and rows[0]["binding"].startswith("slo: ttft_p95")
    assert rows[1]["feasible"] and "headroom" in rows[1]["binding"]


def test_budget_binds_in_fixed_mode() -> None:
    sc = load_scenario(DOCS).model_copy(update={"budget": "$5/h"})
    row = sweep(sc, [], fixed=True).rows[0]
    # 4 x A100-SXM-80GB at the catalog price exceed $5/h
    assert 4 * load_gpus().get("A100-SXM-80GB").price.price_usd_per_gpu_hour > 5
    assert row["status"] == "over budget" and "$5/h" in row["binding"]


def test_overrides_replace_workload_fields() -> None:
    sc = load_scenario(CHATBOT)
    row = sweep(sc, [], fixed=True, overrides={"concurrency": 1, "output": 64}).rows[0]
    assert row["arrival"] == "closed" and row["concurrency"] == 1 and row["output_tokens"] == 64
    with pytest.raises(RequestError, match="not both"):
        sweep(sc, [], fixed=True, overrides={"rate": 1.0, "concurrency": 2})


def test_step_cost_tables_are_built_once_per_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    import planner.load.analytic as analytic

    calls: list[str] = []
    monkeypatch.setenv("VLMPLAN_PARALLEL", "0")  # counted in this process
    real = analytic.build_step_cost

    def counting(cfg, calibration=None):  # type: ignore[no-untyped-def]
        calls.append(cfg.precision)
        return real(cfg, calibration)

    monkeypatch.setattr(analytic, "build_step_cost", counting)
    sc = load_scenario(CHATBOT)
    res = sweep(sc, parse_varies(["precision=int4,int8", "rate=0.05..0.8:100"]), fixed=True)
    assert len(res.rows) == 200
    assert sorted(calls) == ["int4", "int8"]


def test_simulate_load_model_sees_the_batch_one_queue() -> None:
    sc = load_scenario(CHATBOT)
    rows = sweep(sc, parse_varies(["rate=0.5"]), fixed=True, load="simulate").rows
    alone = sweep(sc, [], fixed=True, overrides={"concurrency": 1}).rows[0]
    # max_num_seqs 1 at 0.5 req/s: each request holds the engine ~e2e seconds, so the server is busy
    # rho = 0.5 x e2e of the time and a request waits for the one in service: p95 TTFT far above alone.
    rho = 0.5 * alone["e2e_p50_ms"] / 1000
    assert 0.3 < rho < 1
    assert rows[0]["ttft_p95_ms"] > alone["ttft_p50_ms"] + 0.5 * alone["e2e_p50_ms"]
    with pytest.raises(RequestError, match="--fixed"):
        sweep(sc, [], fixed=False, load="simulate")


def test_fixed_mode_needs_a_configuration() -> None:
    sc = scenario_from_dict({"model": "Qwen/Qwen2.5-VL-7B-Instruct"})
    with pytest.raises(RequestError, match="--fixed needs a configuration"):
        sweep(sc, [], fixed=True)


# --------------------------------------------------------------------------- solver mode


def test_solver_mode_restricts_gpu_and_tp() -> None:
    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    rows = sweep(sc, parse_varies(["gpu=L40S,RTX-4090", "tp=1,2"]), fixed=False).rows
    gpus = load_gpus()
    for r in rows:
        assert r["mode"] == "solve" and r["feasible"], r
        assert r["gpu"] == gpus.get(r["point"].split()[0].split("=")[1]).name
        assert r["tp"] == int(r["point"].split("tp=")[1])
        assert r["cost_per_hour"] == pytest.approx(r["gpus"] * gpus.get(r["gpu"]).price.price_usd_per_gpu_hour)


def test_solver_mode_rejects_context_and_odd_batch() -> None:
    sc = load_scenario(CHATBOT)
    with pytest.raises(RequestError, match="context needs --fixed"):
        sweep(sc, parse_varies(["context=8k"]), fixed=False)
    with pytest.raises(RequestError, match="max_num_seqs"):
        sweep(sc, parse_varies(["batch=3"]), fixed=False)


def test_solver_mode_explains_infeasible_points() -> None:
    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    rows = sweep(sc, parse_varies(["slo=ttft_p95=1ms"]), fixed=False).rows
    assert not rows[0]["feasible"] and rows[0]["status"] == "infeasible"
    assert "latency" in rows[0]["binding"] and "relax" in rows[0]["binding"]


def test_solver_mode_points_are_solved_and_simulated_as_solve_does() -> None:
    # Each point goes through planner.solver.solve with the simulator check on: the row shows the plan solve
    # gives for the same request, and that plan's simulated percentiles.
    from planner.app.whatif.base_case import make_base, point_workload
    from planner.app.whatif.solver_mode import SolverEvaluator
    from planner.solver import solve

    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    varies = parse_varies(["gpu=L40S"])
    (row,) = sweep(sc, varies, fixed=False).rows
    evaluator = SolverEvaluator(make_base(sc, False), varies)
    point = points(varies)[0]
    req = evaluator.request(point, point_workload(evaluator.base, point))
    assert req.verify and req.alternatives == 0
    (c,) = solve(req).chosen
    assert (row["gpu"], row["replicas"], row["max_num_seqs"]) == (c.cfg.gpu.name, c.replicas, c.cfg.max_num_seqs)
    assert c.simulated is not None and c.simulated.meets
    assert row["simulated_ttft_p95_ms"] == pytest.approx(c.simulated.ttft.p95, abs=1e-3)
    assert row["simulated_requests"] == c.simulated.requests


def test_solver_mode_point_rejected_by_the_simulator_is_re_solved(monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.solver import SimCheck, verify

    sc = load_scenario(CHATBOT).model_copy(update={"budget": None})
    first = sweep(sc, parse_varies(["gpu=L40S"]), fixed=False).rows[0]
    rejected: list[tuple] = []

    def fake(space, c):  # type: ignore[no-untyped-def]
        ok = bool(rejected)  # the first deployment checked is rejected, every later one accepted
        if not ok:
            rejected.append(c.ident)
        return SimCheck(ttft=c.prediction.ttft, tpot=c.prediction.tpot, e2e=c.prediction.e2e, requests=10, seed=0,
                        saturated=False, requests_per_s=1.0, meets=ok, failed="" if ok else "ttft_p95 9e3 ms > 1 ms")

    monkeypatch.setenv("VLMPLAN_PARALLEL", "0")  # the fake keeps state in this process
    monkeypatch.setattr(verify, "simulate_replica", fake)
    row = sweep(sc, parse_varies(["gpu=L40S"]), fixed=False).rows[0]
    assert row["feasible"] and "rejected, re-solved" in row["notes"]
    assert row["cost_per_hour"] >= first["cost_per_hour"]
    shown = (row["gpu"], row["precision"], row["kv_cache_dtype"], row["tp"], row["pp"], row["max_num_seqs"],
             row["replicas"])
    assert rejected[0][1:] == (first["gpu"], first["precision"], first["kv_cache_dtype"], first["tp"], first["pp"],
                               first["max_num_seqs"], first["replicas"])
    assert shown != rejected[0][1:]


# --------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    from planner.cli.whatif import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_cli_whatif_json_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "sweep.csv"
    res = CliRunner().invoke(_app(), ["whatif", str(CHATBOT), "--fixed", "--vary", "rate=0.2,50", "--json",
                                      "--csv", str(csv_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["points"] == 2 and data["mode"] == "fixed" and data["vary"] == {"rate": ["0.2", "50"]}
    assert data["rows"][1]["status"] == "saturated" and data["rows"][1]["ttft_p95_ms"] is None
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"point", "feasible", "ttft_p95_ms", "cost_per_1k_requests", "weights_gib", "binding"} <= set(header)
    assert len(csv_path.read_text().splitlines()) == 3


def test_cli_whatif_flags_without_scenario() -> None:
    res = CliRunner().invoke(_app(), ["whatif", "--fixed", "--gpu", "L40S", "--precision", "fp8", "--max-model-len",
                                      "8k", "--concurrency", "1", "--vary", "output=64,256", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    assert [r["gpu"] for r in rows] == ["L40S-48GB"] * 2 and rows[0]["max_model_len"] == 8192
    assert rows[0]["e2e_p50_ms"] < rows[1]["e2e_p50_ms"]


@pytest.mark.parametrize("args,needle", [
    (["--vary", "bogus=1"], "dimension 'bogus'"),
    (["--fixed", "--gpu", "NoSuchGPU"], "NoSuchGPU"),
    (["--fixed", "--precision", "fp4"], "precision"),
    (["--points", "0"], "--points"),
])
def test_cli_whatif_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(_app(), ["whatif", str(CHATBOT), *args])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_cli_plot_without_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = CliRunner().invoke(_app(), ["whatif", str(CHATBOT), "--fixed", "--plot", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: --plot needs matplotlib") and len(res.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- compare


def test_compare_two_scenarios() -> None:
    from planner.app.compare import compare_files

    cmp = compare_files(CHATBOT, DOCS)
    rows = {r.key: r for r in cmp.rows}
    price_4090 = load_gpus().get("RTX-4090").price.price_usd_per_gpu_hour
    price_a100 = load_gpus().get("A100-SXM-80GB").price.price_usd_per_gpu_hour
    assert rows["gpu"].differs and rows["gpu"].a == "RTX-4090-24GB"
    assert rows["cost_per_hour"].delta == pytest.approx(4 * price_a100 - price_4090)
    assert rows["cost_per_hour"].better == "a"
    assert rows["model"].differs and rows["model"].b == "mistralai/Mistral-Small-3.1-24B-Instruct-2503"
    assert json.dumps(cmp.to_json(), allow_nan=False)


def _plan(tmp_path: Path, gpu: str) -> Path:
    from planner.app.solve_plan import to_plan
    from planner.app.solve_request import SolveInput, build_request
    from planner.solver import solve

    inp = SolveInput(model="Qwen/Qwen2.5-VL-7B-Instruct", gpus=gpu, precisions="bf16", rate=1.0,
                     slo=["ttft_p95=2s"])
    req, notes = build_request(inp)
    plan = to_plan(solve(req), req, inp.model, notes)
    path = tmp_path / gpu / "plan.yaml"
    plan.save(path)
    return path


def test_compare_two_plans_and_a_plan_with_a_scenario(tmp_path: Path) -> None:
    from planner.app.compare import compare_files, load_side

    a, b = _plan(tmp_path, "L40S"), _plan(tmp_path, "A100-SXM-80GB")
    cmp = compare_files(a, b)
    assert cmp.a.kind == cmp.b.kind == "plan"
    rows = {r.key: r for r in cmp.rows}
    assert rows["gpu"].a == "L40S-48GB" and rows["gpu"].b == "A100-SXM-80GB"
    saved = yaml.safe_load(a.read_text())["deployments"][0]["predicted"]["ttft_ms"]["p95"]
    assert rows["ttft_p95_ms"].a == saved
    mixed = compare_files(CHATBOT, b)
    assert {mixed.a.kind, mixed.b.kind} == {"scenario", "plan"}
    bad = tmp_path / "x.yaml"
    bad.write_text("just: text\n")
    with pytest.raises(RequestError, match="neither a scenario"):
        load_side(bad)


def test_cli_compare_json_and_table(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["compare", str(CHATBOT), str(DOCS), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["differences"] > 5 and data["a"]["kind"] == "scenario"
    table = CliRunner().invoke(_app(), ["compare", str(CHATBOT), str(DOCS), "--differences"])
    assert table.exit_code == 0 and "* gpu" in table.output and "keys differ" in table.output
    missing = CliRunner().invoke(_app(), ["compare", str(CHATBOT), str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_json_has_no_nan() -> None:
    sc = load_scenario(CHATBOT)
    res = sweep(sc, parse_varies(["rate=100"]), fixed=True)
    text = json.dumps(res.to_json(), allow_nan=False)
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in res.rows[0].values())
    assert '"saturated": true' in text


def test_vary_topology_compares_the_best_plan_of_each_topology_side_by_side():
    # Issue 15: `whatif --vary topology=aggregated,pd`. Each row must be what `solve` finds for that topology alone
    # (the pd row: the cheapest pd plan, whether or not it beats the aggregated one).
    from planner.app.whatif import parse_vary, sweep
    from planner.app.whatif.base_case import make_base, point_workload
    from planner.app.whatif.solver_mode import SolverEvaluator
    from planner.solver import solve as run_solve

    sc = load_scenario(Path("examples/document-pipeline-4xa100/scenario.yaml"))
    res = sweep(sc, [parse_vary("topology=aggregated,pd,epd")], fixed=False)
    agg, pd, epd = res.rows
    assert (agg["topology"], pd["topology"], epd["topology"]) == ("aggregated", "pd", "epd")
    base = make_base(sc, False)
    for row, topo in ((agg, "aggregated"), (pd, "pd"), (epd, "epd")):
        point = {"topology": topo}
        sol = run_solve(SolverEvaluator(base, []).request(point, point_workload(base, point)))
        cost = (sol.disagg.best.cost_per_hour if topo == "pd" else sol.epd.best.cost_per_hour if topo == "epd"
                else sum(c.cost_per_hour for c in sol.chosen))
        assert row["cost_per_hour"] == pytest.approx(cost, rel=1e-3)
    assert epd["binding"].startswith(f"{epd['replicas']} x (LM ")
    assert pd["binding"].startswith("prefill ") and pd["gpus"] >= 2
    with pytest.raises(Exception, match="not one of aggregated, pd, epd"):
        parse_vary("topology=aggregated,disagg")
    with pytest.raises(Exception, match="needs the solver"):
        sweep(sc, [parse_vary("topology=aggregated,pd")], fixed=True)
