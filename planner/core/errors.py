"""Error types. Expected failures raise a PlannerError subclass; the CLI prints
one line and exits 2. An infeasible problem is an answer (exit 3), not an error."""


class PlannerError(Exception):
    """Base class of every expected failure."""


class CatalogError(PlannerError):
    """A catalog file is malformed, or a name does not resolve."""


class RequestError(PlannerError):
    """The user's input is invalid (bad flag value, unsupported combination)."""


class UnsupportedError(PlannerError):
    """The combination is valid input but cannot run (e.g. fp8 on an A100)."""
