"""Fit a bundle into a token budget, most important evidence first.

Why estimate instead of tokenize: the consumer may be any model; ~4 characters per token is
the usual rule for English and JSON, costs nothing, and errs on the generous side for code
and ids. Items are taken by priority; an item that does not fit is first shrunk (long
strings cut), then dropped, and the dropped ids are listed so nothing disappears silently.
"""

from __future__ import annotations

from typing import Any

from enricher.bundle.model import BudgetInfo, EvidenceBundle, EvidenceItem

CHARS_PER_TOKEN = 4
_SHRINK_TO = 240


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    if isinstance(value, dict):
        return {k: _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, limit) for v in value[:20]]
    return value


def shrink(item: EvidenceItem, limit: int = _SHRINK_TO) -> EvidenceItem:
    return EvidenceItem.model_validate(_cut(item.model_dump(mode="json"), limit))


def apply_budget(bundle: EvidenceBundle, token_budget: int) -> EvidenceBundle:
    """Keep items in priority order (stable within a priority) while the estimate fits."""
    items = sorted(enumerate(bundle.items), key=lambda p: (p[1].priority, p[0]))
    shell = bundle.model_copy(update={"items": [], "budget": BudgetInfo(token_budget=token_budget)})
    used = estimate_tokens(shell.model_dump_json()) + 64  # room for the budget numbers
    kept: list[EvidenceItem] = []
    info = BudgetInfo(token_budget=token_budget)
    for _, item in items:
        cost = estimate_tokens(item.model_dump_json()) + 1
        if used + cost > token_budget:
            small = shrink(item)
            small_cost = estimate_tokens(small.model_dump_json()) + 1
            if used + small_cost > token_budget:
                info.items_dropped += 1
                if len(info.dropped_ids) < 50:
                    info.dropped_ids.append(item.id)
                continue
            item, cost = small, small_cost
            info.shrunk_ids.append(item.id)
        kept.append(item)
        used += cost
    info.items_kept = len(kept)
    info.tokens_estimated = used
    return bundle.model_copy(update={"items": kept, "budget": info})
