"""The topology comparison of ``solve --topologies aggregated,pd``: the best aggregated and the best pd plan."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _p(x: float) -> str:
    return f"{x:,.1f}"


def print_topologies(console: Console, plan: Any, sol: Any) -> None:
    """One row per topology searched: its best plan, $/h and p95s (predicted; simulated in brackets)."""
    if getattr(sol, "disagg", None) is None and getattr(sol, "epd", None) is None:
        return
    t = Table(title=f"best plan per topology (chosen: {plan.topology})")
    for col in ("topology", "deployment", "GPUs", "$/h", "TTFT p95 ms", "TPOT p95 ms", "e2e p95 ms", "sim meets"):
        t.add_column(col, justify="left" if col in ("topology", "deployment", "sim meets") else "right")

    def sim_txt(pred: Any, sim: Any, metric: str) -> str:
        v = _p(getattr(pred, f"{metric}_ms").p95)
        return v if sim is None else f"{v} ({_p(getattr(sim, f'{metric}_ms').p95)})"

    if plan.deployments:
        for d in plan.deployments:
            t.add_row("aggregated", f"{d.replicas} x {d.gpus_per_replica} x {d.gpu} {d.precision}",
                      str(d.replicas * d.gpus_per_replica), f"{d.cost_per_hour:,.2f}",
                      sim_txt(d.predicted, d.simulated, "ttft"), sim_txt(d.predicted, d.simulated, "tpot"),
                      sim_txt(d.predicted, d.simulated, "e2e"),
                      "-" if d.simulated is None else ("yes" if d.simulated.meets_slos else "no"))
    else:
        t.add_row("aggregated", "none meets the SLOs", "-", "-", "-", "-", "-", "-")
    pd = plan.pd
    if sol.disagg is None:
        pass
    elif pd is not None:
        pre, dec = pd.prefill, pd.decode
        desc = (f"prefill {pre.replicas} x {pre.gpus_per_replica} x {pre.gpu} {pre.precision} + decode "
                f"{dec.replicas} x {dec.gpus_per_replica} x {dec.gpu} {dec.precision}")
        gpus = pre.replicas * pre.gpus_per_replica + dec.replicas * dec.gpus_per_replica
        t.add_row("pd", desc, str(gpus), f"{pd.cost_per_hour:,.2f}", sim_txt(pd.predicted, pd.simulated, "ttft"),
                  sim_txt(pd.predicted, pd.simulated, "tpot"), sim_txt(pd.predicted, pd.simulated, "e2e"),
                  "-" if pd.simulated is None else ("yes" if pd.simulated.meets_slos else "no"))
    else:
        t.add_row("pd", sol.disagg.note or "none", "-", "-", "-", "-", "-", "-")
    epd = plan.epd
    if getattr(sol, "epd", None) is None:
        pass
    elif epd is not None:
        lm = epd.lm
        desc = (f"{lm.replicas} x (LM {lm.gpus_per_replica} x {lm.gpu} {lm.precision} + {epd.encoders_per_replica} "
                f"encoder x {epd.encoder_gpu})")
        gpus = lm.replicas * (lm.gpus_per_replica + epd.encoders_per_replica)
        t.add_row("epd", desc, str(gpus), f"{epd.cost_per_hour:,.2f}", sim_txt(epd.predicted, epd.simulated, "ttft"),
                  sim_txt(epd.predicted, epd.simulated, "tpot"), sim_txt(epd.predicted, epd.simulated, "e2e"),
                  "-" if epd.simulated is None else ("yes" if epd.simulated.meets_slos else "no"))
    else:
        t.add_row("epd", sol.epd.note or "none", "-", "-", "-", "-", "-", "-")
    console.print(t)
    if epd is not None:
        d = epd.encoder_delay_ms
        shape = ("1E1PD, the shape vLLM calls stable" if epd.stable
                 else "more than 1 encoder per LM replica: beyond what vLLM calls stable (1E1PD)")
        console.print(f"epd: each LM replica's pod holds {epd.encoders_per_replica} encoder-only instance(s) on its "
                      f"node ({shape}); "
                      f"encode {epd.encode_ms:.1f} ms + {epd.connector} save/load {epd.transfer_ms:.1f} ms (measured "
                      f"tmpfs, run27) per request with images; encoders {epd.encoder_load:.0%} busy; encoder path p95 "
                      f"{d.p95:.1f} ms; predicted p95s are sums of the encoder path's and the LM's p95s (conservative)")
    if pd is not None:
        console.print(f"pd: KV transfer {pd.transfer_ms:.2f} ms per request over {pd.link} ({pd.link_gb_per_s:g} GB/s "
                      f"per GPU, {pd.link_load:.1%} busy); each prefill replica holds {pd.prefill_held_kv_tokens:,.0f} "
                      f"KV tokens awaiting the pull (its extra memory); pools {pre.replicas}:{dec.replicas} "
                      f"(prefill:decode); predicted p95s are sums of the pools' p95s (conservative), simulated ones "
                      f"come from the coupled-pool simulator ({pd.simulated.requests_simulated:,} requests)"
                      if pd.simulated is not None else
                      f"pd: KV transfer {pd.transfer_ms:.2f} ms per request over {pd.link}; not simulated")
