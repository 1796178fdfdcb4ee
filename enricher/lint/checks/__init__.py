"""The checks, one module each, all with the same small interface (as pint's checks).

A check module defines:

- `ID`: the id used in output, config and `# enricher-lint disable <ID>` comments;
- `SEVERITY`: the default severity of its findings;
- `OPTIONS`: its configurable options with their defaults (`checks.<ID>` in the config file);
- `NEEDS_PROMETHEUS`: True when it only runs with `--prometheus`;
- `check(rule, ctx) -> list[Finding]`, and optionally `check_file(file, ctx)`;
- a docstring giving the reason, a bad and a good example.

Checks share nothing but `Context`: the configuration, every rule that was read, and the
recording-rule lookups computed once here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from enricher.lint.config import Config
from enricher.lint.model import Finding, Rule
from enricher.lint.promql import Node, Sel, walk

MODULES = (
    "syntax",
    "labels",
    "annotations",
    "symptom",
    "exemplars",
    "promql",
    "for_",
    "duplicates",
    "live",
)


def load_checks() -> list[ModuleType]:
    """Every check module, in the order their findings are most useful."""
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def option_names() -> dict[str, frozenset[str]]:
    return {m.ID: frozenset(m.OPTIONS) for m in load_checks()}


CheckFn = Callable[[Rule, "Context"], list[Finding]]


@dataclass(slots=True)
class Expanded:
    """An expression with the recording rules it reads (from the linted files) followed back."""

    selectors: list[Sel] = field(default_factory=list)  # raw series, not recorded ones
    functions: set[str] = field(default_factory=set)
    nodes: list[Node] = field(default_factory=list)  # every node of every expression followed
    records: list[str] = field(default_factory=list)  # recording rules followed, by name
    unresolved: list[str] = field(default_factory=list)  # `a:b:c` names not in the files


@dataclass(slots=True)
class Context:
    config: Config
    rules: list[Rule]
    prometheus: Any = None  # enricher.lint.live.Live, only with --prometheus
    records: dict[str, list[Rule]] = field(default_factory=dict)
    _expanded: dict[int, Expanded] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # per-check memo (e.g. duplicates index)

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule.is_record and rule.query is not None:
                self.records.setdefault(rule.name, []).append(rule)

    def options(self, check: ModuleType) -> dict[str, Any]:
        return {**check.OPTIONS, **self.config.options(check.ID)}

    def is_page(self, rule: Rule) -> bool:
        return rule.labels.get("severity", "") in self.config.page_severities

    def recorded(self, name: str | None) -> list[Rule]:
        return self.records.get(name, []) if name else []

    def expand(self, rule: Rule) -> Expanded:
        """Follow recording rules back to raw series, once per rule."""
        key = id(rule)
        cached = self._expanded.get(key)
        if cached is None:
            cached = Expanded()
            if rule.query is not None:
                self._follow(rule.query.root, cached, set(), 0)
            self._expanded[key] = cached
        return cached

    def _follow(self, root: Node, out: Expanded, seen: set[str], depth: int) -> None:
        for node in walk(root):
            out.nodes.append(node)
            if not isinstance(node, Sel):
                if hasattr(node, "func"):
                    out.functions.add(node.func)  # type: ignore[union-attr]
                continue
            sources = self.recorded(node.name)
            if not sources:
                if node.name and ":" in node.name:
                    out.unresolved.append(node.name)
                else:
                    out.selectors.append(node)
                continue
            if node.name in seen or depth > 20:
                continue
            seen.add(node.name)  # type: ignore[arg-type]
            out.records.append(node.name)  # type: ignore[arg-type]
            for source in sources:
                if source.query is not None:
                    self._follow(source.query.root, out, seen, depth + 1)
