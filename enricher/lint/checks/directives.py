"""directives: `# enricher-lint` comments must silence what they say they silence.

Why: a disable, snooze or ignore comment that applies to nothing hides nothing, and its author
believes the opposite; a snooze with a date that does not parse never applies; an expired snooze
means the check runs again (said once, as info, so the returning findings are not a surprise).
The comments themselves are read by the loader; this check reports the ones that do nothing:
a disable or snooze comment with no rule below it (only blank and comment lines may lie between
a comment and its rule; one above a group's `name:` or after the last rule is dangling), an
`ignore/line` alone on its line, an `ignore/next-line` above nothing, a malformed snooze date
and an expired snooze. Unknown check ids in comments are `syntax` findings.

Bad:

    - alert: CheckoutDown
      expr: up{job="checkout"} == 0
      for: 5m
    # enricher-lint snooze symptom until 31/12/2030

Good:

    # enricher-lint snooze symptom until 2999-12-31
    - alert: CheckoutDown
      expr: up{job="checkout"} == 0
      for: 5m
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enricher.lint.model import Finding, Rule, Severity

if TYPE_CHECKING:
    from enricher.lint.checks import Context

ID = "directives"
SEVERITY = Severity.WARNING
OPTIONS: dict[str, object] = {}
NEEDS_PROMETHEUS = False


def check(rule: Rule, ctx: Context) -> list[Finding]:
    """The findings come from the comments, not the rules: `engine._directive_findings`."""
    return []
