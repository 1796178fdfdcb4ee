"""Reads rule files into `Rule` records, as strictly as `promtool check rules` does.

YAML is composed (not constructed) with libyaml's `CSafeLoader`, so every node keeps its line
and nothing is parsed twice. The structure is then validated by hand against the fields
Prometheus' `rulefmt` accepts, with promtool's wording; those problems are stored on the rule or
file and reported by the `syntax` check. Accepted inputs: rule files (`groups:`), PrometheusRule
custom resources (`spec.groups`, several documents per file), directories searched recursively
for `*.yml`/`*.yaml`, and `-` for stdin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TextIO

import yaml

from enricher.lint import compat
from enricher.lint.durations import parse_duration
from enricher.lint.model import Problem, Rule, RuleFile
from enricher.lint.templates import parse_template

_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"
_STR = "tag:yaml.org,2002:str"
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_INT_VALUE = re.compile(r"[-+]?(?:0|[1-9][0-9_]*|0[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$")


class _Tags:
    """Implicit tags for composed nodes, only as fine as the loader needs.

    Rule fields are all strings to Prometheus (yaml.v3 decodes any scalar into a string), so
    only null, int (group `limit`) and the `<<` merge key matter. PyYAML's general resolver runs
    a regex cascade in Python for every scalar; this is a few set lookups.
    """

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                if value in _NULLS:
                    return _NULL
                if value == "<<":
                    return _MERGE
                if value[:1] in "0123456789+-" and _INT_VALUE.match(value):
                    return _INT
            return _STR
        return "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


if hasattr(yaml, "CSafeLoader"):

    class _Loader(_Tags, yaml.CSafeLoader):  # type: ignore[misc]
        """libyaml's parser and composer (C) with the tags above."""

else:  # pragma: no cover - PyYAML built without libyaml

    class _Loader(_Tags, yaml.SafeLoader):  # type: ignore[no-redef]
        pass


_LOADER = _Loader
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_DIRECTIVE = re.compile(
    r"(?:^|(?<=\s))#\s*enricher-lint\s+(file/disable|disable|snooze|ignore/next-line|ignore/line)"
    r"(?![\w/-])([^#]*)"
)
_SNOOZE = re.compile(r"(.*?)\s+until\s+(\S+)\s*$")
_CHECK_IDS = re.compile(r"[\s,]+")
# Go/Helm template lines: such a file is a chart template, not a rule file, when it fails to parse.
_TEMPLATED = re.compile(r"^\s*\{\{", re.M)

TOP_FIELDS = frozenset(("groups",))
# Group fields newer than 2.0 (`limit`, `query_offset`, `labels`) and Thanos' are read and
# marked with a Problem code; the syntax check decides against `--prometheus-version`/`--thanos`.
GROUP_FIELDS = frozenset(
    ("name", "interval", "limit", "rules", "query_offset", "labels", "partial_response_strategy")
)
_VERSIONED_GROUP_FIELDS = frozenset(compat.GROUP_FIELDS) | compat.THANOS_GROUP_FIELDS
RULE_FIELDS = frozenset(
    ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations")
)
YAML_SUFFIXES = (".yml", ".yaml")
# yaml.v3 (Prometheus) stops at 10,000 levels; libyaml's composer crashes not far above that.
MAX_YAML_DEPTH = 5000
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(slots=True)
class Directive:
    """An `# enricher-lint ...` comment (a real YAML comment, never text inside a string).

    `kind` is `disable`, `file/disable`, `snooze`, `ignore/next-line` or `ignore/line`; an
    empty `checks` on an ignore means every check. `until` is a snooze's date (None when
    `error` says why it could not be read); `rule` is the line of the rule a disable or
    snooze attached to (0: none, a dangling comment).
    """

    line: int
    file_level: bool
    checks: tuple[str, ...]
    kind: str = "disable"
    until: date | None = None
    error: str = ""
    rule: int = 0
    content: bool = True  # ignore/line: the line holds YAML before the comment


@dataclass(slots=True)
class Inputs:
    """Everything read from the command line's paths."""

    files: list[RuleFile] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    directives: dict[str, list[Directive]] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # directories that held no rule file


def read_inputs(paths: Iterable[str], stdin: TextIO) -> Inputs:
    """Load every path; a path that cannot be read is recorded, not raised.

    A directory that yields no rule file is recorded in `empty` (the command exits 2: a CI
    job pointed at the wrong directory must not pass with "no problems").
    """
    targets = discover(paths, stdin)
    return finish(targets, load_targets(targets))


@dataclass(slots=True)
class Target:
    """One file to read: named on the command line (`explicit`) or found in `origin`, a
    directory given on the command line; `text` is set for stdin."""

    path: str
    explicit: bool
    origin: str | None = None
    text: str | None = None


def discover(paths: Iterable[str], stdin: TextIO) -> list[Target]:
    """The files the paths stand for, in order, without reading them (except stdin)."""
    out: list[Target] = []
    for path in paths:
        if path == "-":
            out.append(Target("<stdin>", True, text=stdin.read()))
        elif os.path.isdir(path):
            found = [Target(file, False, origin=path) for file in _yaml_files(path)]
            out.extend(found or [Target("", False, origin=path)])  # "": a directory of none
        else:
            out.append(Target(path, True))
    return out


def load_targets(targets: Iterable[Target]) -> Inputs:
    """Read and load `targets`; `empty` is left to `finish`, which sees every part."""
    out = Inputs()
    for t in targets:
        if not t.path:
            continue
        text = t.text if t.text is not None else _read(t.path, out)
        if text is None or (not t.explicit and "groups" not in text):
            continue
        _add(out, t.path, text, explicit=t.explicit)
    return out


def finish(targets: list[Target], *parts: Inputs) -> Inputs:
    """Join loaded parts (in target order) and record the directories that held no rules."""
    if len(parts) == 1:
        out = parts[0]
    else:
        out = Inputs()
        for part in parts:
            out.files.extend(part.files)
            out.unreadable.extend(part.unreadable)
            out.directives.update(part.directives)
    loaded = {rf.path for rf in out.files}
    dirs: dict[str, bool] = {}
    for t in targets:
        if t.origin is not None:
            dirs[t.origin] = dirs.get(t.origin, False) or t.path in loaded
    out.empty.extend(d for d, found in dirs.items() if not found)
    return out


def _yaml_files(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(YAML_SUFFIXES):
                yield os.path.join(dirpath, name)


def _read(path: str, out: Inputs) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        out.unreadable.append(f"{path}: {exc.strerror or exc}")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        out.files.append(RuleFile(path, problems=[Problem(line, "file is not valid UTF-8")]))
        return None


def _add(out: Inputs, path: str, text: str, *, explicit: bool) -> None:
    rf, directives = load_text(path, text, explicit=explicit, lazy=True)
    if rf is not None:
        out.files.append(rf)
        if directives:
            out.directives[path] = directives


def load_text(
    path: str, text: str, *, explicit: bool = True, lazy: bool = False
) -> tuple[RuleFile | None, list[Directive]]:
    """Parse one file's text. None when a searched (not named) file is not a rule file.

    With `lazy`, each rule's PromQL is parsed when a check first reads `rule.query` (the
    engine does, before checking the rule), so work split across processes is not repeated.
    """
    rf = RuleFile(path)
    if _too_deep(text):
        rf.problems.append(Problem(1, f"YAML is nested more than {MAX_YAML_DEPTH} levels deep"))
        return rf, []
    try:
        docs = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        if not explicit and _TEMPLATED.search(text):
            return None, []
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        msg = f"YAML does not parse: {problem}" + (f" ({context})" if context else "")
        rf.problems.append(Problem(line, msg))
        return rf, []
    except RecursionError:
        rf.problems.append(Problem(1, "YAML is nested too deeply to read"))
        return rf, []
    found = False
    for doc in docs:
        found |= _document(doc, rf, explicit)
    if not found and not explicit:
        return None, []
    directives = _directives(text, docs) if "enricher-lint" in text else []
    _apply_directives(rf, directives, text)
    if not lazy:
        for rule in rf.rules:
            rule.query  # noqa: B018 - parse now
    return rf, directives


def _too_deep(text: str) -> bool:
    """Flow collections nested past MAX_YAML_DEPTH (libyaml's composer would overflow the stack).

    Block nesting needs one more space of indentation per level, so only `[`/`{` can go deep
    in a file of sane size; most files have too few brackets to need the scan.
    """
    if text.count("[") + text.count("{") <= MAX_YAML_DEPTH:
        return False
    depth = 0
    for m in _BRACKETS.finditer(text):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_YAML_DEPTH:
            return True
    return False


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _last_line(node: yaml.Node, depth: int = 0) -> int:
    """Last line with content of `node` (end marks point at the next token)."""
    if depth < 50 and isinstance(node, yaml.MappingNode) and node.value:
        return _last_line(node.value[-1][1], depth + 1)
    if depth < 50 and isinstance(node, yaml.SequenceNode) and node.value:
        return _last_line(node.value[-1], depth + 1)
    end = node.end_mark
    return end.line if end.column == 0 and end.line > node.start_mark.line else end.line + 1


def _items(
    node: yaml.MappingNode, problems: list[Problem]
) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """Key/value pairs with `<<` merges applied; duplicate keys are problems, as in yaml.v3."""
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    seen: dict[str, int] = {}
    merges: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == _MERGE:
            merges.append(value)
            continue
        if not isinstance(key, yaml.ScalarNode):
            problems.append(Problem(_line(key), "mapping keys must be strings"))
            continue
        if key.value in seen:
            problems.append(
                Problem(
                    _line(key),
                    f'mapping key "{key.value}" already defined at line {seen[key.value]}',
                )
            )
            continue
        seen[key.value] = _line(key)
        out.append((key.value, key, value))
    for merge in merges:
        sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
        for src in sources:
            if isinstance(src, yaml.MappingNode):
                for k, kn, vn in _items(src, []):
                    if k not in seen:
                        seen[k] = _line(kn)
                        out.append((k, kn, vn))
    return out


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a string"


def _str(node: yaml.Node, what: str, problems: list[Problem]) -> str | None:
    if isinstance(node, yaml.ScalarNode):
        return "" if node.tag == _NULL else node.value
    problems.append(Problem(_line(node), f"{what} must be a string, not {_kind(node)}"))
    return None


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _document(doc: yaml.Node, rf: RuleFile, explicit: bool) -> bool:
    """Read one YAML document; True if it is a rule document."""
    if _is_null(doc):
        return False
    if not isinstance(doc, yaml.MappingNode):
        if explicit:
            rf.problems.append(
                Problem(_line(doc), f"expected a mapping with `groups`, found {_kind(doc)}")
            )
        return False
    items = _items(doc, rf.problems)
    keys = {k: (kn, vn) for k, kn, vn in items}
    if "groups" not in keys and ("kind" in keys or "apiVersion" in keys):
        kind = keys.get("kind")
        if kind is None or not isinstance(kind[1], yaml.ScalarNode):
            return False
        if kind[1].value != "PrometheusRule":
            return False
        spec = keys.get("spec")
        if spec is None or not isinstance(spec[1], yaml.MappingNode):
            return True
        for k, _, vn in _items(spec[1], rf.problems):
            if k == "groups":
                _groups(vn, rf, crd=True)
        return True
    if "groups" not in keys and not explicit:
        return False
    for k, kn, _ in items:
        if k not in TOP_FIELDS:
            rf.problems.append(
                Problem(
                    _line(kn),
                    f"field {k} not found in type rulefmt.RuleGroups",
                    "a rule file has a single top-level key, `groups`",
                )
            )
    if "groups" in keys:
        _groups(keys["groups"][1], rf, crd=False)
    return True


def _groups(node: yaml.Node, rf: RuleFile, *, crd: bool) -> None:
    if _is_null(node):
        return
    if not isinstance(node, yaml.SequenceNode):
        rf.problems.append(Problem(_line(node), f"`groups` must be a list, not {_kind(node)}"))
        return
    names: dict[str, int] = {}
    for gnode in node.value:
        if not isinstance(gnode, yaml.MappingNode):
            rf.problems.append(
                Problem(_line(gnode), f"a group must be a mapping, not {_kind(gnode)}")
            )
            continue
        _group(gnode, rf, names, crd)


def _group(
    gnode: yaml.MappingNode,
    rf: RuleFile,
    names: dict[str, int],
    crd: bool = False,
) -> None:
    problems = rf.problems
    items = _items(gnode, problems)
    name = ""
    rules_node: yaml.Node | None = None
    for key, kn, vn in items:
        if key not in GROUP_FIELDS:
            problems.append(Problem(_line(kn), f"field {key} not found in type rulefmt.RuleGroup"))
            continue
        if key in _VERSIONED_GROUP_FIELDS and not (crd and key == "partial_response_strategy"):
            problems.append(
                Problem(
                    _line(kn),
                    f"field {key} not found in type rulefmt.RuleGroup",
                    code=f"group-field:{key}",
                )
            )
        if key == "name":
            name = _str(vn, "group name", problems) or ""
        elif key in ("interval", "query_offset"):
            text = _str(vn, key, problems)
            if text is not None:
                try:
                    parse_duration(text)
                except ValueError as exc:
                    problems.append(Problem(_line(vn), f"invalid {key}: {exc}"))
        elif key == "limit":
            if not (
                isinstance(vn, yaml.ScalarNode)
                and (vn.tag == _INT or vn.tag == _NULL or re.fullmatch(r"[-+]?\d+", vn.value))
            ):
                problems.append(Problem(_line(vn), "limit must be an integer"))
        elif key == "labels":
            _string_map(vn, "group label", problems)
        elif key == "partial_response_strategy":
            text = _str(vn, key, problems)
            if text is not None and text not in ("warn", "abort"):
                problems.append(
                    Problem(_line(vn), f"partial_response_strategy must be warn or abort: {text}")
                )
        elif key == "rules":
            rules_node = vn
    line = _line(gnode)
    if not name:
        problems.append(Problem(line, "Groupname must not be empty"))
    elif name in names:
        problems.append(
            Problem(
                line,
                f'groupname: "{name}" is repeated in the same file (first at line {names[name]})',
            )
        )
    else:
        names[name] = line
    if rules_node is None or _is_null(rules_node):
        return
    if not isinstance(rules_node, yaml.SequenceNode):
        problems.append(
            Problem(_line(rules_node), f"`rules` must be a list, not {_kind(rules_node)}")
        )
        return
    for rnode in rules_node.value:
        if not isinstance(rnode, yaml.MappingNode):
            problems.append(Problem(_line(rnode), f"a rule must be a mapping, not {_kind(rnode)}"))
            continue
        rf.rules.append(_rule(rnode, rf.path, name))


def _string_map(
    node: yaml.Node, what: str, problems: list[Problem]
) -> tuple[dict[str, str], dict[str, int]]:
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    if _is_null(node):
        return values, lines
    if not isinstance(node, yaml.MappingNode):
        problems.append(Problem(_line(node), f"{what}s must be a mapping, not {_kind(node)}"))
        return values, lines
    for key, kn, vn in _items(node, problems):
        value = _str(vn, f"{what} {key!r}", problems)
        if value is not None:
            values[key] = value
            lines[key] = _line(kn)
    return values, lines


def _rule(node: yaml.MappingNode, path: str, group: str) -> Rule:
    rule = Rule(path, group, _line(node), _last_line(node))
    p = rule.problems
    fields: dict[str, str] = {}
    for key, kn, vn in _items(node, p):
        rule.keys[key] = _line(kn)
        if key not in RULE_FIELDS:
            p.append(
                Problem(
                    _line(kn),
                    f"field {key} not found in type rulefmt.RuleNode",
                    "rule fields are alert/record, expr, for, keep_firing_for, labels, annotations",
                )
            )
        elif key == "labels":
            rule.labels, rule.label_lines = _string_map(vn, "label", p)
        elif key == "annotations":
            rule.annotations, rule.annotation_lines = _string_map(vn, "annotation", p)
        else:
            value = _str(vn, key, p)
            if value is not None:
                fields[key] = value
            if key == "expr":
                style = getattr(vn, "style", None)
                rule.expr_line = _line(vn) + (1 if style in ("|", ">") else 0)
    alert, record = fields.get("alert", ""), fields.get("record", "")
    rule.name = alert or record
    if alert and record:
        p.append(Problem(rule.line, "only one of 'record' and 'alert' must be set"))
    elif not alert and not record:
        p.append(Problem(rule.line, "one of 'record' or 'alert' must be set"))
    else:
        rule.kind = "alert" if alert else "record"
    for key in ("for", "keep_firing_for"):
        if key in fields:
            try:
                seconds = parse_duration(fields[key])
            except ValueError as exc:
                p.append(Problem(rule.keys[key], f"invalid '{key}': {exc}"))
            else:
                if key == "for":
                    rule.for_seconds = seconds
                else:
                    rule.keep_firing_for_seconds = seconds
    rule.expr = fields.get("expr", "")
    if not rule.expr_line:
        rule.expr_line = rule.line
    if not rule.expr.strip():
        p.append(Problem(rule.line, "field 'expr' must be set in rule"))
    else:
        rule._unparsed = True  # parsed on first use of `query`; load_text(lazy=False): now
    if rule.is_record:
        if not METRIC_NAME.match(record):
            p.append(Problem(rule.keys["record"], f"invalid recording rule name: {record}"))
        if rule.annotations:
            p.append(
                Problem(rule.keys["annotations"], "invalid field 'annotations' in recording rule")
            )
        if rule.for_seconds:
            p.append(Problem(rule.keys["for"], "invalid field 'for' in recording rule"))
        if rule.keep_firing_for_seconds:
            p.append(
                Problem(
                    rule.keys["keep_firing_for"],
                    "invalid field 'keep_firing_for' in recording rule",
                )
            )
    for k, line in rule.label_lines.items():
        if not LABEL_NAME.match(k) or k == "__name__":
            p.append(Problem(line, f"invalid label name: {k}"))
    for k, line in rule.annotation_lines.items():
        if not LABEL_NAME.match(k):
            p.append(Problem(line, f"invalid annotation name: {k}"))
    if rule.is_alert:
        for what, values, lines in (
            ("label", rule.labels, rule.label_lines),
            ("annotation", rule.annotations, rule.annotation_lines),
        ):
            for k, v in values.items():
                err = parse_template(v).error
                if err:
                    p.append(Problem(lines[k], f"template in {what} {k!r} does not parse: {err}"))
    return rule


def _scalar_spans(docs: list[yaml.Node]) -> list[tuple[int, int, int, int]]:
    """(start line, start column, end line, end column), 0-based, of every scalar node that
    spans more than one line or could hold a `#`: text inside them is not a comment."""
    spans = []
    stack = list(docs)
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.style or "#" in node.value:  # quoted, block, or a plain scalar with `#`
                s, e = node.start_mark, node.end_mark
                spans.append((s.line, s.column, e.line, e.column))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.append(k)
                stack.append(v)
    return spans


def _in_scalar(spans: list[tuple[int, int, int, int]], line: int, column: int) -> bool:
    pos = (line, column)
    return any((sl, sc) <= pos < (el, ec) for sl, sc, el, ec in spans)


def _directives(text: str, docs: list[yaml.Node] | None = None) -> list[Directive]:
    """The `# enricher-lint ...` comments of a file; with its composed `docs`, a match inside
    a quoted or block scalar (an annotation quoting a directive) is not obeyed."""
    out = []
    spans: list[tuple[int, int, int, int]] | None = None
    lines = text.split("\n")
    for i, line in enumerate(lines, start=1):
        if "enricher-lint" not in line:
            continue
        m = _DIRECTIVE.search(line)
        if m is None:
            continue
        if docs:
            if spans is None:
                spans = _scalar_spans(docs)
            if _in_scalar(spans, i - 1, m.start()):
                continue
        kind, rest = m.group(1), m.group(2).strip()
        until, error = None, ""
        if kind == "snooze":
            sm = _SNOOZE.match(rest)
            if sm is None:
                rest, error = "", "snooze comment needs `<check>[,<check>] until YYYY-MM-DD`"
            else:
                rest, raw = sm.group(1), sm.group(2)
                try:
                    until = date.fromisoformat(raw) if len(raw) == 10 else None
                except ValueError:
                    until = None
                if until is None:
                    error = f"snooze date {raw!r} is not a date: write YYYY-MM-DD"
        ids = tuple(x for x in _CHECK_IDS.split(rest) if x)
        if kind in ("disable", "file/disable") and not ids:
            continue  # `disable` alone is prose, not a directive (as before)
        d = Directive(i, kind == "file/disable", ids, kind, until, error)
        if kind == "ignore/next-line":
            after = lines[i].strip() if i < len(lines) else ""
            d.content = bool(after) and not after.startswith("#")
        else:
            d.content = bool(line[: m.start()].strip())
        out.append(d)
    return out


def _apply_directives(
    rf: RuleFile, directives: list[Directive], text: str, today: date | None = None
) -> None:
    """Attach each disable or snooze comment to the file or to the rule it sits in or above.

    A comment above a rule applies to it when only blank and comment lines lie between them;
    `Directive.rule` records the rule (0 when the comment applies to none: dangling). A snooze
    disables its checks before its date only; ignore comments are applied to findings by the
    engine.
    """
    if not directives:
        return
    rf.disabled = frozenset(c for d in directives if d.kind == "file/disable" for c in d.checks)
    per_rule = [d for d in directives if d.kind in ("disable", "snooze")]
    if not per_rule:
        return
    today = today or date.today()
    lines = text.split("\n")
    for rule in rf.rules:
        first = rule.line
        while first > 1 and (not (s := lines[first - 2].strip()) or s.startswith("#")):
            first -= 1
        ids = set(rule.disabled)
        for d in per_rule:
            if d.rule or not first <= d.line <= rule.end_line:
                continue
            d.rule = rule.line
            if d.kind == "disable" or (d.until is not None and today < d.until):
                ids.update(d.checks)  # a snooze only before its date
        if ids:
            rule.disabled = frozenset(ids)
