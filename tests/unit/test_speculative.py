"""Speculative decoding (issue 16, item 2): the acceptance formula, the step times at small and large batches, the
load models on a speculative config, the solver's choice, the emitted --speculative-config and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from planner.app.solve_plan import to_plan
from planner.app.solve_request import SolveInput, build_request_models
from planner.catalog.loader import load_calibration, load_engine, load_gpus, load_models, load_precisions
from planner.catalog.speculative import load_speculative, supported_methods
from planner.cli.main import app
from planner.core.errors import RequestError, UnsupportedError
from planner.emit import vllm as vllm_emit
from planner.emit import vllm_flags
from planner.emit.nim import check_supported
from planner.load.analytic import predict
from planner.load.simulator import fixed_requests, simulate
from planner.perf.memory import memory_breakdown
from planner.perf.speculative import SpeculativeStepCost, make_step_cost, tokens_per_step
from planner.perf.stepcost import StepCost
from planner.solver import solve
from planner.spec.config import ServingConfig, resolve
from planner.spec.shape import request_shape
from planner.spec.speculation import speculation_choices, speculation_of
from planner.spec.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "speculative-decoding"
ENGINE = load_engine()
PREC = load_precisions()
LLAMA = load_models().get("meta-llama/Llama-3.1-8B-Instruct")
H100 = load_gpus().get("H100-SXM-80GB")


def _costs(method: str = "eagle3", acceptance: float | None = None, model=LLAMA, draft_rate: float | None = None):
    base = ServingConfig(model=model, gpu=H100, max_model_len=4096)
    cal = load_calibration(H100.name)
    spec = speculation_of(model, method, acceptance, draft_rate=draft_rate)
    spec_cfg = resolve(replace(base, speculative=spec), ENGINE)
    return make_step_cost(resolve(base, ENGINE), cal, PREC), make_step_cost(spec_cfg, cal, PREC)


# --------------------------------------------------------------------------- the formula


@pytest.mark.parametrize("k, a, expected", [
    (3, 0.5, 1 + 0.5 + 0.25 + 0.125),   # every draft token accepted with 1/2, given the ones before
    (1, 0.85, 1.85),                    # MTP's one token at DeepSeek-V3's 85%
    (3, 0.0, 1.0),                      # nothing accepted: the target's own token only
    (5, 0.9, 1 + 0.9 + 0.81 + 0.729 + 0.6561 + 0.59049),
])
def test_tokens_per_step_by_hand(k: int, a: float, expected: float) -> None:
    assert tokens_per_step(k, a) == pytest.approx(expected, rel=1e-12)


def test_tokens_per_step_rejects_a_certain_draft() -> None:
    with pytest.raises(ValueError):
        tokens_per_step(3, 1.0)


# --------------------------------------------------------------------------- step times


def _per_token(cost: StepCost, n: int, ctx: int) -> float:
    """A decode-only step of ``n`` sequences as the load models run it (engine overhead included), per token."""
    return float(cost.decode_steps_ms(n, n * ctx))


def test_speculation_helps_at_batch_1_and_hurts_at_batch_256() -> None:
    # A verify step reads the weights once for k + 1 tokens: at one sequence that is memory-bound, so it costs
    # little more than a plain step while it yields E tokens. At 256 sequences of short context the GEMMs of
    # 4 x 256 tokens are compute-bound: the rejected draft tokens cost as much as accepted ones.
    plain, spec = _costs("eagle3", 0.6)  # E = 2.18 with k = 3
    ctx = 400
    assert spec.verify_step_ms(1, ctx) < 1.25 * _per_token(plain, 1, ctx)
    assert _per_token(spec, 1, ctx) < 0.6 * _per_token(plain, 1, ctx)
    assert spec.verify_step_ms(512, ctx) > 2.0 * _per_token(plain, 512, ctx)
    assert _per_token(spec, 256, ctx) > _per_token(plain, 256, ctx)


def test_ngram_pays_for_synchronous_scheduling() -> None:
    # vLLM turns async scheduling off for n-gram (run25's server log): every step pays the engine's exposed CPU
    # work (the calibration's sync_* constants, fitted on run25). At the catalog's default acceptance 0.3 and draft
    # rate 0.5 (E = 1.21) that costs more than it gains at every batch; at run26's greedy acceptance (0.99 on 97%
    # of steps, E = 3.9) it still wins at batch 1, as measured there (TPOT 1.87 against 4.74 ms). Before the
    # measurement the model drafted on every step without the sync cost and had n-gram win at batch 1.
    plain, ngram = _costs("ngram")
    assert ngram.cfg.async_scheduling is False and plain.cfg.async_scheduling is True
    assert ngram.tokens_per_step == pytest.approx(1 + 0.5 * (0.3 + 0.09 + 0.027))
    extra = ngram.step_overhead_ms - plain.step_overhead_ms
    assert extra == pytest.approx(load_calibration(H100.name).value("sync_step_overhead_ms"))
    for n in (1, 8, 64, 256):
        assert _per_token(ngram, n, 400) > _per_token(plain, n, 400), n
    _, greedy = _costs("ngram", 0.99, draft_rate=0.97)
    assert _per_token(greedy, 1, 400) < 0.5 * _per_token(plain, 1, 400)


def test_draft_rate_scales_the_verified_and_the_yielded_tokens() -> None:
    # A step of n sequences verifies n (1 + r k) tokens and yields 1 + r (a + ... + a^k) per sequence; at r = 1
    # both are the every-step figures (EAGLE, MTP).
    assert tokens_per_step(3, 0.5, 0.25) == pytest.approx(1 + 0.25 * (0.5 + 0.25 + 0.125))
    assert tokens_per_step(3, 0.5, 1.0) == tokens_per_step(3, 0.5)
    _, full = _costs("ngram", 0.3, draft_rate=1.0)
    _, half = _costs("ngram", 0.3, draft_rate=0.5)
    assert full.verify_tokens_per_seq == 4.0 and half.verify_tokens_per_seq == 2.5
    n = 64
    assert half.verify_gemm[n] == pytest.approx(half.lin(160) + half.lm_head(160))  # 64 x 2.5 = 160 rows
    assert half.verify_gemm[n] < full.verify_gemm[n]


def test_only_a_method_that_turns_async_scheduling_off_schedules_synchronously() -> None:
    # vllm/config/vllm.py (0.26.0): async scheduling stays on for EAGLE/MTP drafts, goes off for n-gram.
    cat = load_speculative()
    assert {m for m, spec in cat.methods.items() if spec.disables_async_scheduling} == {"ngram"}
    base = ServingConfig(model=LLAMA, gpu=H100, max_model_len=4096)
    assert resolve(base, ENGINE).async_scheduling is ENGINE.async_scheduling is True
    for method, expected in (("eagle3", True), ("eagle", True), ("ngram", False)):
        cfg = resolve(replace(base, speculative=speculation_of(LLAMA, method)), ENGINE)
        assert cfg.async_scheduling is expected, method


def test_both_load_models_schedule_a_ngram_config_synchronously(monkeypatch) -> None:
    # The config decides, not the caller: simulate() and the analytic waves model read cfg.async_scheduling.
    import sys

    analytic = sys.modules["planner.load.analytic.predict"]  # the module (the package re-exports its function)

    cfg = resolve(ServingConfig(model=LLAMA, gpu=H100, max_model_len=2048, max_num_seqs=64,
                                speculative=speculation_of(LLAMA, "ngram")), ENGINE)
    cost = make_step_cost(cfg, load_calibration(H100.name), PREC)
    kv = memory_breakdown(cfg, ENGINE, PREC).kv_capacity_tokens
    seen = []
    real = analytic.predict_waves
    monkeypatch.setattr(analytic, "predict_waves", lambda *a, **k: seen.append(a[5]) or real(*a, **k))
    w = Workload(name="chat", prompt_tokens=256, output_tokens=128, images=[], arrival="closed", concurrency=8)
    pred = predict(cost, cfg, request_shape(cfg, w), "closed", None, 8, kv)
    assert seen == [False]
    sim = simulate(cost, fixed_requests(400, 256, 128), kv, "closed", concurrency=8, seed=1, cfg=cfg)
    forced = simulate(cost, fixed_requests(400, 256, 128), kv, "closed", concurrency=8, seed=1, cfg=cfg,
                      async_scheduling=False)
    assert np.array_equal(sim.first_token_s, forced.first_token_s)
    assert pred.tpot.p50 == pytest.approx(float(np.percentile(sim.tpot_ms, 50)), rel=0.10)


def test_default_eagle3_gain_shrinks_with_the_batch() -> None:
    plain, spec = _costs("eagle3")
    ratios = [_per_token(spec, n, 400) / _per_token(plain, n, 400) for n in (1, 64, 256, 512)]
    assert ratios == sorted(ratios) and ratios[0] < 0.5 and ratios[-1] > 0.85


def test_draft_cost_is_a_small_share_of_the_step_at_batch_1() -> None:
    # An EAGLE-3 head is one target-sized layer (of 32) and a 32k-row lm_head: three passes cost well under the
    # target's step, and n-gram drafts cost no GPU time.
    plain, spec = _costs("eagle3")
    assert 0 < spec.draft_gemm[1] < 0.25 * _per_token(plain, 1, 400)
    _, ngram = _costs("ngram")
    assert ngram.draft_gemm[1] == 0.0


def test_plain_config_keeps_the_plain_step_cost() -> None:
    plain, spec = _costs()
    assert type(plain) is StepCost and isinstance(spec, SpeculativeStepCost)
    assert plain.decode_extra_ms(64) == 0.0


def test_draft_weights_and_kv_come_out_of_the_kv_cache() -> None:
    base = resolve(ServingConfig(model=LLAMA, gpu=H100, max_model_len=4096), ENGINE)
    spec = replace(base, speculative=speculation_of(LLAMA, "eagle3"))
    a, b = memory_breakdown(base, ENGINE, PREC), memory_breakdown(spec, ENGINE, PREC)
    assert b.weights_bytes - a.weights_bytes == int(0.48e9 * 2)  # the catalog's params_b, bf16, TP 1
    assert b.kv_bytes_per_token == a.kv_bytes_per_token * 33 // 32  # one draft layer beside 32
    assert b.kv_capacity_tokens < a.kv_capacity_tokens


# --------------------------------------------------------------------------- load models


def test_simulator_and_analytic_agree_on_a_speculative_config() -> None:
    cfg = resolve(ServingConfig(model=LLAMA, gpu=H100, max_model_len=2048, max_num_seqs=64,
                                speculative=speculation_of(LLAMA, "eagle3")), ENGINE)
    cost = make_step_cost(cfg, load_calibration(H100.name), PREC)
    kv = memory_breakdown(cfg, ENGINE, PREC).kv_capacity_tokens
    w = Workload(name="chat", prompt_tokens=256, output_tokens=256, images=[], arrival="poisson", rate_per_s=8)
    shape = request_shape(cfg, w)
    pred = predict(cost, cfg, shape, "poisson", 8.0, None, kv)
    sim = simulate(cost, fixed_requests(3000, 256, 256), kv, "poisson", rate_per_s=8.0, seed=1, cfg=cfg)
    for analytic, simulated in ((pred.tpot.p50, np.percentile(sim.tpot_ms, 50)),
                                (pred.tpot.mean, float(np.mean(sim.tpot_ms)))):
        assert analytic == pytest.approx(simulated, rel=0.10)
    # and the plain config's TPOT is higher at this light load
    plain_cfg = replace(cfg, speculative=None)
    plain = predict(make_step_cost(plain_cfg, load_calibration(H100.name), PREC), plain_cfg, shape, "poisson", 8.0,
                    None, memory_breakdown(plain_cfg, ENGINE, PREC).kv_capacity_tokens)
    assert pred.tpot.p50 < 0.6 * plain.tpot.p50


# --------------------------------------------------------------------------- the solver


def _solve(file: str, choice: str, rate: float | None = None):
    req, notes, args = build_request_models(SolveInput(scenario=EXAMPLE / file, verify=False, speculative=choice,
                                                       acceptance_rate=rate))
    sol = solve(req)
    return sol.chosen[0], to_plan(sol, req, args, notes)


def test_solver_buys_speculation_at_low_concurrency_with_a_tight_tpot() -> None:
    # 4 clients, TPOT p95 <= 4 ms: plain decoding needs the weights split over 4 H100s, an EAGLE-3 draft one.
    spec, plan = _solve("scenario.yaml", "auto")
    plain, _ = _solve("scenario.yaml", "off")
    assert spec.cfg.speculative is not None and spec.cfg.speculative.method == "eagle3"
    assert plain.cfg.speculative is None
    assert spec.cost_per_hour < plain.cost_per_hour and spec.gpus < plain.gpus
    dep = plan.deployments[0]
    assert dep.speculative is not None and dep.speculative.tokens_per_step == pytest.approx(2.734, abs=1e-3)
    assert "speculative" in plan.model_dump(mode="json")["deployments"][0]


def test_solver_leaves_speculation_out_at_high_load() -> None:
    # 400 requests/s: batches near 256 sequences. At the default acceptance the draft saves no replica (plain
    # wins the tie); at 0.6 it costs one more.
    auto, plan = _solve("high-load.yaml", "auto")
    off, _ = _solve("high-load.yaml", "off")
    forced, _ = _solve("high-load.yaml", "eagle3", 0.6)
    assert auto.cfg.speculative is None and auto.cost_per_hour == off.cost_per_hour
    assert forced.cfg.speculative is not None and forced.cost_per_hour > off.cost_per_hour
    assert "speculative" not in plan.model_dump(mode="json")["deployments"][0]  # a plain plan reads as before


def test_ngram_no_longer_buys_the_tight_tpot_that_eagle3_does() -> None:
    # 4 clients, TPOT p95 <= 4 ms. Before run25 the model drafted on every step with no synchronous-scheduling cost
    # and had n-gram (acceptance 0.3) meet it on 2 H100s ($9.52/h, cheaper than plain's 4); with the measured sync
    # cost and the default draft rate no n-gram deployment reaches 4 ms, while the EAGLE-3 plan is unchanged and
    # auto never considers n-gram (test below).
    req, _, _ = build_request_models(SolveInput(scenario=EXAMPLE / "scenario.yaml", verify=False, speculative="ngram"))
    assert solve(req).status == "infeasible"
    spec, _ = _solve("scenario.yaml", "auto")
    assert spec.cfg.speculative.method == "eagle3" and spec.gpus == 1 and spec.cfg.async_scheduling


def test_auto_needs_a_tpot_or_e2e_slo_and_a_draft() -> None:
    qwen_vl = load_models().get("Qwen/Qwen2.5-VL-7B-Instruct")
    assert speculation_choices(qwen_vl, "auto") == []  # n-gram only: not chosen blind
    assert supported_methods(load_speculative(), qwen_vl) == ["ngram"]
    req, _, _ = build_request_models(SolveInput(scenario=EXAMPLE / "scenario.yaml", verify=False,
                                                slo=["ttft_p95=1s"]))
    from planner.solver.configs import speculative_settings

    assert speculative_settings(req, req.workloads[0], LLAMA) == ([], False)


# --------------------------------------------------------------------------- emitters


def test_vllm_flag_is_emitted_and_parsed() -> None:
    _, plan = _solve("scenario.yaml", "auto")
    dep = plan.deployments[0]
    args = [a for a in vllm_emit.serve_args(dep) if isinstance(a, str)]
    _, values = vllm_flags.parse_serve_argv(["vllm", "serve", *args])
    assert values["speculative-config"] == {"method": "eagle3", "num_speculative_tokens": 3,
                                            "model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"}
    data, _ = vllm_emit.config_mapping(dep)
    assert vllm_flags.parse_config(data)["speculative-config"]["method"] == "eagle3"
    with pytest.raises(RequestError, match="speculative decoding"):
        check_supported(dep, "nim")


@pytest.mark.parametrize("value, needle", [
    ({"method": "medusa", "num_speculative_tokens": 3}, "method must be"),
    ({"method": "eagle3", "num_speculative_tokens": 3}, "needs model"),
    ({"method": "ngram", "num_speculative_tokens": 0, "prompt_lookup_max": 4, "prompt_lookup_min": 2}, "> 0"),
    ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 2, "prompt_lookup_min": 4}, "prompt_lookup"),
    ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4, "prompt_lookup_min": 2, "x": 1},
     "unknown key"),
])
def test_flag_check_refuses_a_bad_speculative_config(value: dict, needle: str) -> None:
    with pytest.raises(vllm_flags.FlagError, match=needle):
        vllm_flags.parse_serve_argv(["vllm", "serve", "m", "--speculative-config", json.dumps(value)])


def test_ngram_emits_its_lookup_window() -> None:
    spec = speculation_of(LLAMA, "ngram")
    assert spec.config_json() == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4,
                                  "prompt_lookup_min": 2}
    assert vllm_flags.parse_serve_argv(["vllm", "serve", "m", "--speculative-config", json.dumps(spec.config_json())])


# --------------------------------------------------------------------------- bad input


def test_unavailable_method_names_the_available_ones() -> None:
    with pytest.raises(UnsupportedError, match="available: ngram"):
        speculation_of(load_models().get("Qwen/Qwen2.5-VL-7B-Instruct"), "eagle3")
    with pytest.raises(UnsupportedError, match="ships no MTP layers"):
        speculation_of(LLAMA, "mtp")


@pytest.mark.parametrize("args, needle", [
    (["solve", "--speculative", "medusa"], "--speculative 'medusa'"),
    (["solve", "--speculative", "eagle3", "--acceptance-rate", "1.5"], "--acceptance-rate 1.5"),
    (["solve", "-m", "Qwen/Qwen2.5-VL-7B-Instruct", "--speculative", "eagle3", "--slo", "tpot_p95=50ms"],
     "not available"),
    (["estimate", "-m", "meta-llama/Llama-3.1-8B-Instruct", "--acceptance-rate", "0.5"], "needs --speculative"),
    (["estimate", "-m", "meta-llama/Llama-3.1-8B-Instruct", "--speculative", "eagle3", "--pp", "2"],
     "pipeline parallelism"),
])
def test_bad_speculative_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr


# --------------------------------------------------------------------------- catalog


def test_every_speculative_constant_has_a_source() -> None:
    cat = load_speculative()
    models = {m.name for m in load_models()}
    assert set(cat.methods) == {"ngram", "eagle", "eagle3", "mtp"}
    for spec in cat.methods.values():
        assert spec.source.title and spec.source.url
    for d in cat.drafts:
        assert d.target in models and d.source.url and d.source.notes
