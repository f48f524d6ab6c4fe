"""Unit constants and the one place where floats become solver integers."""

GIB = 1024**3
MIB = 1024**2
GB = 1000**3


def to_gib(n_bytes: float) -> float:
    return n_bytes / GIB
