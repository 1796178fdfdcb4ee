"""Every check documents a bad and a good example; the examples must do what they say."""

from __future__ import annotations

import re
import textwrap
from types import ModuleType

import pytest

from enricher.lint.checks import load_checks
from enricher.lint.model import Severity
from tests.lint.conftest import run

OFFLINE = [m for m in load_checks() if not m.NEEDS_PROMETHEUS]


def example(module: ModuleType, kind: str) -> str:
    doc = module.__doc__ or ""
    m = re.search(rf"^{kind}[^\n]*:\n\n((?:    .*\n|\n)+)", doc, re.M)
    assert m, f"{module.ID}: no {kind} example in the docstring"
    rules = textwrap.indent(textwrap.dedent(m.group(1)), "      ")
    return f"groups:\n  - name: example\n    rules:\n{rules}"


@pytest.mark.parametrize("module", load_checks(), ids=lambda m: m.ID)
def test_every_check_has_an_id_severity_options_and_examples(module: ModuleType) -> None:
    assert re.fullmatch(r"[a-z]+", module.ID)
    assert isinstance(module.SEVERITY, Severity)
    assert isinstance(module.OPTIONS, dict)
    assert (module.__doc__ or "").startswith(f"{module.ID}: ")
    assert "Bad" in module.__doc__ and "Good" in module.__doc__


@pytest.mark.parametrize("module", OFFLINE, ids=lambda m: m.ID)
def test_bad_example_is_reported(module: ModuleType) -> None:
    findings = [f for f in run(example(module, "Bad"), checks=(module.ID,)) if f.check == module.ID]
    assert findings, f"{module.ID}: its documented bad example passes"


@pytest.mark.parametrize("module", OFFLINE, ids=lambda m: m.ID)
def test_good_example_is_clean(module: ModuleType) -> None:
    findings = [
        f for f in run(example(module, "Good"), checks=(module.ID,)) if f.check == module.ID
    ]
    assert findings == [], f"{module.ID}: its documented good example is reported: {findings}"
