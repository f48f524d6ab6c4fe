"""vlmplan: a deployment planner for vision-language models."""

__version__ = "0.1.0"
