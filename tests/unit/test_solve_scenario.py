"""`vlmplan solve` with several workloads (a fleet scenario), the simulator check, and the lazy search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from planner import solver as S
from planner.app.solve_request import SolveInput, build_request_models
from planner.catalog.loader import load_gpus, load_models
from planner.cli.main import app
from planner.solver import verify
from planner.solver.search import alternatives
from planner.solver.space import Space
from planner.spec.slo import parse_budget, parse_slos
from planner.spec.workload import ImageSize, Workload

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleet" / "fleet.yaml"
H100 = load_gpus().get("H100")
QWEN3B = load_models().get("Qwen/Qwen2.5-VL-3B-Instruct")
LLAMA8B = load_models().get("meta-llama/Llama-3.1-8B-Instruct")
runner = CliRunner()


def _two_models(budget: str, verify: bool = False) -> S.SolveRequest:
    """Two light workloads of two models, H100 at bf16 only: each fits one GPU at TP 1 (3B: ~7.5 GB of bf16
    weights; 8B: ~16 GB; an H100 holds 80 GB) and 0.5 requests/s is far below one replica's capacity, so each
    needs exactly one H100."""
    img = Workload(name="captions", prompt_tokens=32, output_tokens=64, images=[ImageSize(width=480, height=360)],
                   arrival="poisson", rate_per_s=0.5)
    chat = Workload(name="chat", prompt_tokens=256, output_tokens=64, arrival="poisson", rate_per_s=0.5)
    return S.SolveRequest(model=QWEN3B, workloads=[img, chat], slos=parse_slos(["ttft_p95=2s"]),
                          budget=parse_budget(budget), gpus=[H100], precisions=["bf16"], kv_cache_dtypes=["auto"],
                          models={"chat": LLAMA8B}, verify=verify)


def test_two_models_one_h100_is_infeasible_by_budget() -> None:
    sol = S.solve(_two_models("1xH100"))
    assert sol.status == "infeasible"
    # Hand check: 1 GPU per workload -> 2 x H100 > the budget's 1.
    assert sol.explanation.startswith("budget: the cheapest feasible plan needs 2 x H100-SXM-80GB > 1")
    assert "2xH100-SXM-80GB" in sol.relaxation


def test_two_models_two_h100_share_the_inventory() -> None:
    sol = S.solve(_two_models("2xH100"))
    assert sol.status == "optimal"
    assert [(c.workload, c.cfg.model.name, c.gpus) for c in sol.chosen] == [
        ("captions", QWEN3B.name, 1), ("chat", LLAMA8B.name, 1)]
    # Total = sum of the deployments = 2 GPUs x the H100's catalog price.
    total = sum(c.cost_per_hour for c in sol.chosen)
    assert total == pytest.approx(2 * H100.price.price_usd_per_gpu_hour)
    assert sum(c.gpus for c in sol.chosen) <= 2


def test_per_workload_slos_are_used() -> None:
    req = _two_models("2xH100")
    strict = S.SolveRequest(**{**req.__dict__, "workload_slos": {"chat": parse_slos(["ttft_p95=1ms"])}})
    sol = S.solve(strict)
    assert sol.status == "infeasible"
    assert sol.explanation.startswith("chat: latency: the lowest achievable ttft p95 is")


def _fake_sim(bad: set[tuple], calls: list[tuple]):  # type: ignore[no-untyped-def]
    def fake(space: Space, c: S.Candidate) -> S.SimCheck:
        calls.append(c.ident)
        ok = c.ident not in bad and "all" not in bad
        return S.SimCheck(ttft=c.prediction.ttft, tpot=c.prediction.tpot, e2e=c.prediction.e2e, requests=10, seed=0,
                          saturated=False, requests_per_s=1.0, meets=ok,
                          failed="" if ok else "ttft_p95 9999.0 ms > 2000 ms")
    return fake


def test_simulator_rejection_moves_to_the_next_best(monkeypatch: pytest.MonkeyPatch) -> None:
    req = _two_models("4xH100", verify=True)
    first = S.solve(S.SolveRequest(**{**req.__dict__, "verify": False}))
    victim = first.chosen[0]
    calls: list[tuple] = []
    monkeypatch.setenv("VLMPLAN_PARALLEL", "0")  # the fake records its calls in this process
    monkeypatch.setattr(verify, "simulate_replica", _fake_sim({victim.ident}, calls))
    sol = S.solve(req)
    assert sol.status == "optimal"
    assert victim.ident in calls  # it was simulated, and then
    assert all(c.ident != victim.ident for c in sol.chosen)  # not presented
    assert all(c.simulated is not None and c.simulated.meets for c in sol.chosen)
    assert any("rejected, re-solved" in n and "captions" in n for n in sol.notes)
    assert sum(c.cost_per_hour for c in sol.chosen) >= sum(c.cost_per_hour for c in first.chosen) - 1e-9


def test_simulator_rejecting_everything_is_infeasible(monkeypatch: pytest.MonkeyPatch) -> None:
    req = S.SolveRequest(**{**_two_models("4xH100", verify=True).__dict__, "verify_rounds": 1})
    monkeypatch.setattr(verify, "simulate_replica", _fake_sim({"all"}, []))
    sol = S.solve(req)
    assert sol.status == "infeasible" and sol.chosen == []
    assert sol.explanation.startswith("simulation: the simulator rejected")


def test_real_simulator_check_is_attached() -> None:
    sol = S.solve(_two_models("2xH100", verify=True))
    assert sol.status == "optimal"
    for c in sol.chosen:
        assert c.simulated is not None
        # The quick run settles only a clear margin; anything closer gets the full run.
        if c.simulated.ttft.p95 > S.SIM_QUICK_MARGIN * 2000:
            assert c.simulated.requests == S.SIM_REQUESTS
        else:
            assert c.simulated.requests in (S.SIM_QUICK_REQUESTS, S.SIM_REQUESTS)
        # The check is the SLO on the simulated percentiles.
        assert c.simulated.meets == (not c.simulated.saturated and c.simulated.ttft.p95 <= 2000)


def test_simulator_check_runs_long_when_the_slo_is_close() -> None:
    # Under a loose SLO the quick run settles the check; with the limit a few percent above the simulated TTFT
    # p95 of that plan, the chosen deployments sit close to it and get the full run.
    loose = S.solve(_two_models("2xH100", verify=True))
    assert all(c.simulated is not None and c.simulated.requests == S.SIM_QUICK_REQUESTS for c in loose.chosen)
    limit = 1.05 * max(c.simulated.ttft.p95 for c in loose.chosen if c.simulated is not None)
    q = _two_models("2xH100", verify=True)
    tight = S.solve(S.SolveRequest(**{**q.__dict__, "slos": parse_slos([f"ttft_p95={limit:.1f}ms"])}))
    assert tight.status == "optimal"
    close = [c for c in tight.chosen if c.simulated is not None and c.simulated.ttft.p95 > S.SIM_QUICK_MARGIN * limit]
    assert close
    assert all(c.simulated is not None and c.simulated.requests == S.SIM_REQUESTS for c in close)


def test_lazy_search_equals_full_enumeration() -> None:
    """The bounded search returns what enumerating every candidate returns: the same deployments and the same
    alternatives (the speed-up may not change the answer)."""
    wl = Workload(name="w", prompt_tokens=256, output_tokens=128, images=[ImageSize(width=640, height=480)],
                  arrival="poisson", rate_per_s=3.0)
    gpus = [load_gpus().get(n) for n in ("L4", "L40S", "A100-80GB", "RTX-4090")]
    for budget in ("", "1xL4,2xL40S,4xA100-80GB"):
        req = S.SolveRequest(model=QWEN3B, workloads=[wl], slos=parse_slos(["ttft_p95=400ms"]),
                             budget=parse_budget(budget), gpus=gpus, kv_cache_dtypes=["auto", "fp8"])
        sol = S.solve(req)
        every = S.candidates_for(req, wl, S.Screening())
        status, chosen = S.assign(["w"], S.prune(every, "cost"), req.budget, "cost")
        assert sol.status == status == "optimal"
        assert [c.ident for c in sol.chosen] == [c.ident for c in chosen]
        assert [c.ident for c in sol.alternatives] == [c.ident for c in alternatives(chosen, every)]
        assert sol.screening["w"].skipped > 0  # the bounds did prune


def _cli_json(args: list[str]) -> tuple[int, dict]:
    res = runner.invoke(app, ["solve", *args, "--json"])
    return res.exit_code, (json.loads(res.stdout) if res.stdout.strip().startswith("{") else {})


def test_cli_fleet_scenario_json_has_the_issue_keys() -> None:
    code, out = _cli_json(["--scenario", str(FLEET)])
    assert code == 0, out
    assert out["status"] == "optimal"
    for key in ("status", "cost_per_hour", "deployments", "binding", "alternatives"):
        assert key in out
    sc = yaml.safe_load(FLEET.read_text())
    assert [d["workload"] for d in out["deployments"]] == [w["name"] for w in sc["workloads"]]
    assert [d["model"] for d in out["deployments"]] == [w["model"] for w in sc["workloads"]]
    for d in out["deployments"]:
        for key in ("workload", "model", "gpu", "gpus_per_replica", "tp", "pp", "replicas", "precision",
                    "kv_cache_dtype", "max_num_seqs", "max_model_len", "max_num_batched_tokens",
                    "gpu_memory_utilization", "cost_per_hour", "predicted", "simulated"):
            assert key in d, key
        for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
            assert set(d["predicted"][metric]) == {"mean", "p50", "p90", "p95", "p99"}
            assert set(d["simulated"][metric]) == {"mean", "p50", "p90", "p95", "p99"}
        assert "memory" in d["predicted"] and d["simulated"]["meets_slos"] is True
    assert out["cost_per_hour"] == pytest.approx(sum(d["cost_per_hour"] for d in out["deployments"]), abs=1e-3)
    # The shared inventory holds: GPUs used per type <= the budget's.
    inventory = {load_gpus().get(g.split("x", 1)[1]).name: int(g.split("x", 1)[0]) for g in sc["budget"].split(",")}
    used: dict[str, int] = {}
    for d in out["deployments"]:
        used[d["gpu"]] = used.get(d["gpu"], 0) + d["gpus_per_replica"] * d["replicas"]
    assert all(n <= inventory[g] for g, n in used.items())


def test_cli_scenario_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "budget": "1xH100", "slo": ["ttft_p95=2s"], "search": {"gpus": ["H100"], "precisions": ["bf16"]},
        "workloads": [
            {"name": "a", "model": "Qwen/Qwen2.5-VL-3B-Instruct",
             "workload": {"preset": "captioning", "arrival": "poisson", "rate_per_s": 0.5}},
            {"name": "b", "model": "meta-llama/Llama-3.1-8B-Instruct",
             "workload": {"preset": "chat", "arrival": "poisson", "rate_per_s": 0.5}},
        ]}))
    code, _ = _cli_json(["--scenario", str(path), "--kv-cache-dtypes", "auto", "--no-simulate"])
    assert code == 3  # two workloads, one GPU
    code, out = _cli_json(["--scenario", str(path), "--kv-cache-dtypes", "auto", "--budget", "2xH100",
                           "--no-simulate"])
    assert code == 0 and out["cost_per_hour"] == pytest.approx(2 * H100.price.price_usd_per_gpu_hour)
    assert all(d["simulated"] is None for d in out["deployments"])


@pytest.mark.parametrize("content, fragment", [
    ("model: Qwen/Qwen2.5-VL-7B-Instruct\nworkloads: [{workload: chat}]\nbudgt: 4xA100\n", "budgt"),
    ("workloads: [{model: Qwen/Qwen2.5-VL-3B-Instruct, workload: captioning},"
     " {model: Qwen/Qwen2.5-VL-3B-Instruct, workload: captioning}]\n", "used twice"),
    ("workload: chat\nworkloads: [{model: Qwen/Qwen2.5-VL-3B-Instruct, workload: chat}]\n", "not both"),
    ("workloads: [{model: Qwen/Qwen2.5-VL-3B-Instruct, workload: no-such-preset}]\n", "workloads[0]"),
    ("[1, 2\n", "not valid YAML"),
])
def test_cli_bad_scenario_is_one_line_exit_2(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    res = runner.invoke(app, ["solve", "--scenario", str(path)])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err


def test_cli_scenario_rejects_workload_flags() -> None:
    res = runner.invoke(app, ["solve", "--scenario", str(FLEET), "--rate", "3"])
    assert res.exit_code == 2 and "--rate cannot be combined with --scenario" in res.stderr


def test_cli_workload_preset_for_one_workload() -> None:
    code, out = _cli_json(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--workload", "chat", "--rate", "2",
                           "--gpus", "L4,L40S", "--no-simulate"])
    assert code == 0
    d = out["deployments"][0]
    assert d["workload"] == "chat" and d["images"] == [] and d["gpu"] in ("L4-24GB", "L40S-48GB")


def test_build_request_reads_fleet_models_and_slos() -> None:
    req, notes, args = build_request_models(SolveInput(scenario=FLEET))
    sc = yaml.safe_load(FLEET.read_text())
    assert [w.name for w in req.workloads] == [w["name"] for w in sc["workloads"]]
    assert args == {w["name"]: w["model"] for w in sc["workloads"]}
    assert [s.key for s in req.slos_of("chat")] == ["ttft_p95", "tpot_p95"]
    assert [s.key for s in req.slos_of("captions")] == ["ttft_p95"]  # the scenario's default
    assert req.budget.inventory == {load_gpus().get(g).name: n for g, n in
                                    (("H100", 8), ("L40S", 16), ("A100-80GB", 8), ("L4", 16))}
    assert req.verify


def test_a_rejected_configuration_returns_with_the_fewest_replicas_the_simulator_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulator accepts the first choice's configuration only from 3 replicas more, and nothing else of that
    # workload: the answer must be that configuration at exactly that count (found by galloping and bisecting,
    # each count simulated once).
    req = _two_models("8xH100", verify=True)
    first = S.solve(S.SolveRequest(**{**req.__dict__, "verify": False}))
    victim = first.chosen[0]

    def same_config(c: S.Candidate) -> bool:
        return (c.workload == victim.workload and c.cfg.gpu.name == victim.cfg.gpu.name
                and c.cfg.precision == victim.cfg.precision and c.cfg.kv_cache_dtype == victim.cfg.kv_cache_dtype
                and c.cfg.tp == victim.cfg.tp and c.cfg.pp == victim.cfg.pp)

    calls: list[S.Candidate] = []
    monkeypatch.setenv("VLMPLAN_PARALLEL", "0")  # the fake records its calls in this process

    def fake(space: Space, c: S.Candidate) -> S.SimCheck:
        calls.append(c)
        ok = c.workload != victim.workload or (same_config(c) and c.replicas >= victim.replicas + 3)
        return S.SimCheck(ttft=c.prediction.ttft, tpot=c.prediction.tpot, e2e=c.prediction.e2e, requests=10, seed=0,
                          saturated=False, requests_per_s=1.0, meets=ok,
                          failed="" if ok else "ttft_p95 9999.0 ms > 2000 ms")

    monkeypatch.setattr(verify, "simulate_replica", fake)
    sol = S.solve(S.SolveRequest(**{**req.__dict__, "verify_rounds": 50}))
    assert sol.status == "optimal"
    (mine,) = [c for c in sol.chosen if c.workload == victim.workload]
    assert same_config(mine) and mine.replicas == victim.replicas + 3
    assert mine.simulated is not None and mine.simulated.meets
    counts = [c.replicas for c in calls if same_config(c) and c.cfg.max_num_seqs == victim.cfg.max_num_seqs]
    assert len(counts) == len(set(counts))  # no count simulated twice
    assert victim.replicas + 2 in counts  # the bisection proved one fewer fails
