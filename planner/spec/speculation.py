"""What the user asks of speculative decoding (``--speculative``, ``--acceptance-rate``) -> ``Speculation`` choices
for one model, from catalogs/speculative."""

from __future__ import annotations

from typing import Literal

from planner.catalog.schema import ModelSpec
from planner.catalog.speculative import check_method, draft_for, load_speculative, supported_methods
from planner.core.errors import RequestError
from planner.spec.config import Speculation

SpeculativeChoice = Literal["auto", "off", "ngram", "eagle", "eagle3", "mtp"]
CHOICES = ("auto", "off", "ngram", "eagle", "eagle3", "mtp")


def parse_choice(text: str | None) -> str:
    """``--speculative``'s value, checked (default ``auto``)."""
    value = (text or "auto").strip().lower()
    if value not in CHOICES:
        raise RequestError(f"--speculative {text!r}: expected one of {', '.join(CHOICES)}")
    return value


def check_acceptance(rate: float | None) -> float | None:
    if rate is not None and not 0 < rate < 1:
        raise RequestError(f"--acceptance-rate {rate:g}: the per-token acceptance must be in (0, 1)")
    return rate


def check_draft_rate(rate: float | None) -> float | None:
    if rate is not None and not 0 < rate <= 1:
        raise RequestError(f"draft rate {rate:g}: the share of steps that carry a draft must be in (0, 1]")
    return rate


def speculation_of(model: ModelSpec, method: str, acceptance_rate: float | None = None,
                   num_speculative_tokens: int | None = None, draft_rate: float | None = None) -> Speculation:
    """One method for ``model`` at the catalog's defaults (acceptance, draft rate and draft length overridable)."""
    cat = load_speculative()
    m = check_method(cat, model, method)
    spec = cat.methods[m]
    draft = draft_for(cat, model, m)
    k = num_speculative_tokens or spec.default_num_speculative_tokens
    a = check_acceptance(acceptance_rate) or spec.default_acceptance_rate
    r = check_draft_rate(draft_rate) or spec.default_draft_rate
    if draft is None:
        return Speculation(method=m, num_speculative_tokens=k, acceptance_rate=a, draft_rate=r,
                           extra_config=tuple(sorted(spec.extra_config.items())))
    return Speculation(method=m, num_speculative_tokens=k, acceptance_rate=a, draft_model=draft.model,
                       draft_layers=draft.num_layers, draft_vocab_size=draft.draft_vocab_size,
                       draft_params_b=draft.params_b, extra_config=tuple(sorted(spec.extra_config.items())),
                       draft_rate=r)


def speculation_choices(model: ModelSpec, choice: str, acceptance_rate: float | None = None
                        ) -> list[Speculation]:
    """The speculative settings a solve searches besides "off": ``auto`` the model's preferred trained-draft method
    (none when it has only n-gram, whose acceptance is too data-dependent to choose blind), a named method that
    one (an error when the model cannot run it), ``off`` none."""
    choice = parse_choice(choice)
    if choice == "off":
        return []
    if choice == "auto":
        trained = [m for m in supported_methods(load_speculative(), model) if m != "ngram"]
        return [speculation_of(model, trained[0], acceptance_rate)] if trained else []
    return [speculation_of(model, choice, acceptance_rate)]
