"""Fit a bundle into a token budget, most important evidence first.

Why estimate instead of tokenize: the consumer may be any model; ~4 characters per token is
the usual rule for English and JSON, costs nothing, and errs on the generous side for code
and ids. Items are taken by priority; an item that does not fit is first shrunk (long
strings cut), then dropped, and the dropped ids are listed so nothing disappears silently.

Why entries: an item's cost and its shrunk form depend only on the item, so they are
computed at most once per item (`BudgetEntry`). During an alert storm the items of one
incident are shared by every alert's bundle, and fitting each alert's bundle is then plain
arithmetic over cached costs instead of re-serialising every item per alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from enricher.bundle.model import BudgetInfo, EvidenceBundle, EvidenceItem

CHARS_PER_TOKEN = 4
_SHRINK_TO = 240
# Room for the budget numbers, which are filled in after the estimate.
SHELL_SLACK = 64


def estimate_tokens(text: str) -> int:
    return tokens_for_chars(len(text))


def tokens_for_chars(n: int) -> int:
    return (n + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


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


# Payload fields of an item (`null` when unset); `"name":` per field, and the commas between
# fields (any field added later only makes the JSON longer, so the floor stays a floor).
_PAYLOADS = ("span", "log", "template", "exemplar", "trace", "contrast", "deploy")
_FIELD_CHARS = (
    sum(len(f) + 3 for f in EvidenceItem.model_fields) + len(EvidenceItem.model_fields) - 1
)


class BudgetEntry:
    """One item with its token cost and shrunk form, each computed on first use.

    `redacted` and `small_redacted` are slots for the bundle builder's redacted copies, so
    an entry shared by many bundles is redacted once as well."""

    __slots__ = (
        "_cost",
        "_floor",
        "_small",
        "_small_cost",
        "item",
        "redacted",
        "small_redacted",
    )

    def __init__(self, item: EvidenceItem) -> None:
        self.item = item
        self._cost: int | None = None
        self._small: EvidenceItem | None = None
        self._small_cost: int | None = None
        self._floor: int | None = None
        self.redacted: EvidenceItem | None = None
        self.small_redacted: EvidenceItem | None = None

    @property
    def cost(self) -> int:
        if self._cost is None:
            self._cost = estimate_tokens(self.item.model_dump_json()) + 1
        return self._cost

    @property
    def small_floor(self) -> int:
        """A lower bound of `small_cost` that needs no serialisation: the shrunk item's
        JSON holds at least every field name, the cut id, query and summary (a JSON string
        is never shorter than its text plus quotes), the priority, and `null` or `{}` for
        each payload. Items that cannot fit even so are dropped without being shrunk."""
        if self._floor is not None:
            return self._floor
        it = self.item
        n = 2 + _FIELD_CHARS + len(str(it.priority))
        n += len(it.kind) + len(it.source) + 4  # two short strings, quoted
        for text in (it.id, it.query, it.summary):
            n += min(len(text), _SHRINK_TO + 1) + 2
        for name in _PAYLOADS:
            n += 4 if getattr(it, name) is None else 2
        self._floor = (n + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + 1
        return self._floor

    @property
    def small(self) -> EvidenceItem:
        if self._small is None:
            self._small = shrink(self.item)
        return self._small

    @property
    def small_cost(self) -> int:
        if self._small_cost is None:
            self._small_cost = estimate_tokens(self.small.model_dump_json()) + 1
        return self._small_cost


def shell_tokens(shell: EvidenceBundle) -> int:
    """Tokens of a bundle without its items (and with an empty budget section)."""
    return estimate_tokens(shell.model_dump_json()) + SHELL_SLACK


def fit(
    entries: Sequence[BudgetEntry], used: int, token_budget: int
) -> tuple[list[tuple[BudgetEntry, bool]], BudgetInfo]:
    """Entries to keep in priority order (stable within a priority), each with whether it is
    kept shrunk; `used` is what the rest of the bundle already costs."""
    order = sorted(range(len(entries)), key=lambda i: (entries[i].item.priority, i))
    kept: list[tuple[BudgetEntry, bool]] = []
    dropped = 0
    dropped_ids: list[str] = []
    shrunk_ids: list[str] = []
    for i in order:
        e = entries[i]
        cost = e.cost
        shrunk = False
        if used + cost > token_budget:
            if used + e.small_floor > token_budget:  # cannot fit even shrunk
                dropped += 1
                if len(dropped_ids) < 50:
                    dropped_ids.append(e.item.id)
                continue
            small_cost = e.small_cost
            if used + small_cost > token_budget:
                dropped += 1
                if len(dropped_ids) < 50:
                    dropped_ids.append(e.item.id)
                continue
            cost, shrunk = small_cost, True
            shrunk_ids.append(e.small.id)
        kept.append((e, shrunk))
        used += cost
    info = BudgetInfo(
        token_budget=token_budget,
        tokens_estimated=used,
        items_kept=len(kept),
        items_dropped=dropped,
        dropped_ids=dropped_ids,
        shrunk_ids=shrunk_ids,
    )
    return kept, info


def apply_budget(bundle: EvidenceBundle, token_budget: int) -> EvidenceBundle:
    """Keep items in priority order (stable within a priority) while the estimate fits."""
    shell = bundle.model_copy(update={"items": [], "budget": BudgetInfo(token_budget=token_budget)})
    kept, info = fit([BudgetEntry(i) for i in bundle.items], shell_tokens(shell), token_budget)
    items = [e.small if shrunk else e.item for e, shrunk in kept]
    return bundle.model_copy(update={"items": items, "budget": info})
