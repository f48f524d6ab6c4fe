"""Load model: request-level latency under load for a vLLM 0.33 (V1) engine.

- ``planner.perf.stepcost.StepCost``: fast step times derived from the per-op roofline.
- ``simulator.simulate``: discrete-event simulation of the V1 scheduler (the reference).
- ``analytic.predict``: queueing approximation for the solver's inner loop, checked against the simulator.
- ``estimate_load.run_load``: what ``vlmplan estimate`` reports under load (simulated, saturation, SLO headroom).
"""
