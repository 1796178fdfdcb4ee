"""The checks, one module each, all with the same small interface (as pint's checks).

A check module defines:

- `ID`: the id used in output, config and `# enricher-lint disable <ID>` comments;
- `SEVERITY`: the default severity of its findings;
- `OPTIONS`: its configurable options with their defaults (`checks.<ID>` in the config file);
- `NEEDS_PROMETHEUS`: True when it only runs with `--prometheus`;
- `check(rule, ctx) -> list[Finding]`, and optionally `check_file(file, ctx)` and
  `check_all(files, ctx)` (once per run, for findings about the whole set of files);
- a docstring giving the reason, a bad and a good example.

Checks share nothing but `Context`: the configuration, every rule that was read, and the
recording-rule lookups computed once here.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from enricher.lint.config import Config
from enricher.lint.model import Rule
from enricher.lint.promql import Sel

MODULES = (
    "syntax",
    "labels",
    "annotations",
    "symptom",
    "exemplars",
    "promql",
    "vectormatching",
    "impossible",
    "fragile",
    "valuelabel",
    "for_",
    "duplicates",
    "regexp",
    "counter",
    "dependency",
    "paging",
    "live",
    "directives",
)


def load_checks() -> list[ModuleType]:
    """Every check module, in the order their findings are most useful."""
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def option_names() -> dict[str, dict[str, Any]]:
    """Each check's options with their defaults (the config file is type-checked against them)."""
    return {m.ID: dict(m.OPTIONS) for m in load_checks()}


@dataclass(slots=True)
class Expanded:
    """An expression with the recording rules it reads (from the linted files) followed back."""

    selectors: list[Sel] = field(default_factory=list)  # raw series, not recorded ones
    functions: set[str] = field(default_factory=set)
    records: list[str] = field(default_factory=list)  # recording rules followed, by name
    unresolved: list[str] = field(default_factory=list)  # `a:b:c` names not in the files

    def merge(self, other: Expanded) -> None:
        self.selectors.extend(s for s in other.selectors if s not in self.selectors)
        self.functions |= other.functions
        self.records.extend(r for r in other.records if r not in self.records)
        self.unresolved.extend(u for u in other.unresolved if u not in self.unresolved)


_IN_PROGRESS = Expanded()


@dataclass(slots=True)
class Context:
    config: Config
    rules: list[Rule]
    prometheus: Any = None  # enricher.lint.live.Live, only with --prometheus
    records: dict[str, list[Rule]] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # per-check memo (e.g. duplicates index)
    _expanded: dict[int, Expanded] = field(default_factory=dict)
    _page: dict[int, bool] = field(default_factory=dict)
    _pinned: dict[int, dict[str, str]] = field(default_factory=dict)
    _pin_index: dict[tuple[str, str], dict[str | None, list[Rule]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule.is_record and rule.expr:  # not `rule.query`: that would parse every rule
                self.records.setdefault(rule.name, []).append(rule)

    def is_page(self, rule: Rule) -> bool:
        """Whether the alert pages someone: its static labels match `paging:` in the config."""
        page = self._page.get(id(rule))
        if page is None:
            page = self._page[id(rule)] = rule.is_alert and self.config.is_page(rule.labels)
        return page

    def recorded(self, name: str | None) -> list[Rule]:
        """Recording rules in the linted files that record `name`."""
        return self.records.get(name, []) if name else []

    def sources(self, sel: Sel) -> list[Rule]:
        """The recording rules that can produce the series `sel` selects.

        One name is often recorded once per service (`service="a"`, `service="b"`, ...): a
        selector's `label="value"` matchers rule out the recordings that pin another value.
        """
        rules = self.recorded(sel.name)
        if len(rules) < 2:
            return rules
        wanted = [(m.name, m.value) for m in sel.matchers if m.op == "=" and m.name != "__name__"]
        if not wanted:
            return rules
        label, value = wanted[0]
        if len(rules) > 8:
            # Many recordings of one name (one per service, say): find the likely sources from
            # the text of their expressions, so only those are parsed (and checked exactly).
            likely = self._likely(sel.name, label, rules, value)  # type: ignore[arg-type]
            found = [r for r in likely if self._pins(r).get(label, value) == value]
            if len(wanted) > 1:
                found = [r for r in found if all(self._pins(r).get(k, v) == v for k, v in wanted)]
            return found
        index = self._pin_index.get((sel.name, label))  # type: ignore[arg-type]
        if index is None:
            index = {}
            for r in rules:
                index.setdefault(self._pins(r).get(label), []).append(r)
            self._pin_index[(sel.name, label)] = index  # type: ignore[index]
        found = index.get(value, []) + index.get(None, [])
        if len(wanted) > 1:
            found = [r for r in found if all(self._pins(r).get(k, v) == v for k, v in wanted)]
        return found

    def _likely(self, name: str, label: str, rules: list[Rule], value: str) -> list[Rule]:
        """Recordings of `name` that may pin `label` to `value`, judged from their text: a
        static label decides; `label="v"` in the expression may pin it to v (a series whose
        label was aggregated away matches no `label="value"` selector either); an expression
        that never names `label` lets it through unpinned (so may match any value). Missed:
        `x{label="a"} or y`, where y's series keep any value."""
        key = ("text", name, label)
        index = self._pin_index.get(key)  # type: ignore[arg-type]
        if index is None:
            index = {}
            pattern = re.compile(
                rf"\b{re.escape(label)}\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'|`([^`]*)`)"
            )
            for r in rules:
                static = r.labels.get(label)
                if static is not None:
                    index.setdefault(static, []).append(r)
                    continue
                if label not in r.expr:
                    index.setdefault(None, []).append(r)
                    continue
                values = {a or b or c for a, b, c in pattern.findall(r.expr)}
                if not values or any("\\" in v for v in values):
                    index.setdefault(None, []).append(r)  # cannot tell from text: check it
                for v in values:
                    index.setdefault(v, []).append(r)
            self._pin_index[key] = index  # type: ignore[index]
        return index.get(value, []) + index.get(None, [])

    def _pins(self, rule: Rule) -> dict[str, str]:
        """Label values every series of a recording rule carries (static labels, kept matchers)."""
        pins = self._pinned.get(id(rule))
        if pins is None:
            pins = {}
            q = rule.query
            if q is not None:
                conflicting = set()
                for sel in q.selectors:
                    for m in sel.matchers:
                        if m.op != "=" or m.name == "__name__" or not q.labels.may_have(m.name):
                            continue
                        if pins.setdefault(m.name, m.value) != m.value:
                            conflicting.add(m.name)
                for name in conflicting:
                    del pins[name]
            pins.update(rule.labels)
            self._pinned[id(rule)] = pins
        return pins

    def expand(self, rule: Rule) -> Expanded:
        """Follow recording rules back to raw series; memoised per rule, cycles cut."""
        key = id(rule)
        cached = self._expanded.get(key)
        if cached is not None:
            return cached
        self._expanded[key] = _IN_PROGRESS
        out = Expanded()
        if rule.query is not None:
            out.functions |= rule.query.functions()
            for node in rule.query.selectors:
                sources = self.sources(node) or self.recorded(node.name)
                if sources:
                    if node.name not in out.records:
                        out.records.append(node.name)  # type: ignore[arg-type]
                    for source in sources:
                        out.merge(self.expand(source))
                elif node.name and ":" in node.name:
                    if node.name not in out.unresolved:
                        out.unresolved.append(node.name)
                elif node not in out.selectors:
                    out.selectors.append(node)
        self._expanded[key] = out
        return out
