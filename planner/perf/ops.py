"""What the speed model returns: an ``Op`` (one kernel kind of a step, its FLOPs, bytes and time) and a
``StepTime`` (a step's ops, with the CPU launch floor of an eager step).

Kept apart from the formulas so that every module costing a step (decoder, vision encoder, the per-op
roofline itself) shares one result type and reports bound and kernel counts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

ACT = 2  # bytes of a 16-bit activation


@dataclass(frozen=True)
class Op:
    name: str
    flops: float
    bytes: float
    time_s: float
    bound: str
    """``compute``, ``memory``, ``latency`` (kernel floor) or ``link``."""
    count: int = 1
    """How many times the op runs per step (layers)."""
    kernels: int = 1
    """Kernel launches per run of the op (each pays the fixed per-kernel cost)."""

    @property
    def total_s(self) -> float:
        return self.time_s * self.count


@dataclass(frozen=True)
class StepTime:
    ops: tuple[Op, ...]
    eager_launch_s: float = 0.0
    """CPU time to launch one kernel when the step runs eagerly (no CUDA graph);
    0 for steps replayed from CUDA graphs. An eager step takes the longer of
    its GPU time and the CPU time to launch its kernels."""

    @property
    def gpu_ms(self) -> float:
        return sum(op.total_s for op in self.ops) * 1e3

    @property
    def num_kernels(self) -> int:
        return sum(op.kernels * op.count for op in self.ops)

    @property
    def time_ms(self) -> float:
        return max(self.gpu_ms, self.num_kernels * self.eager_launch_s * 1e3)

    @property
    def flops(self) -> float:
        return sum(op.flops * op.count for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes * op.count for op in self.ops)

    @property
    def bound(self) -> str:
        """Whichever of compute or memory accounts for more of the step's time."""
        compute = sum(op.total_s for op in self.ops if op.bound == "compute")
        other = sum(op.total_s for op in self.ops if op.bound != "compute")
        return "compute" if compute > other else "memory"

