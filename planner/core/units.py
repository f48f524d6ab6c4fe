"""Unit constants and the one place where floats become solver integers."""

GIB = 1024**3
MIB = 1024**2
GB = 1000**3
