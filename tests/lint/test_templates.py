"""The Go template parser: the labels a template reads, and the errors Go would raise."""

from __future__ import annotations

import pytest

from enricher.lint.templates import parse_template


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("no template here", ()),
        ("{{ $labels.instance }} is down", ("instance",)),
        ("{{ .Labels.job }}", ("job",)),
        ('{{ index $labels "pod" }}', ("pod",)),
        ('{{ reReplaceAll ":.*" "" $labels.instance | toUpper }}', ("instance",)),
        ("{{ toUpper (stripPort $labels.instance) }}", ("instance",)),
        ("{{ $labels.a }}{{ $labels.b }}{{ $labels.a }}", ("a", "b")),
        # Inside range/with the dot is rebound: .Labels is another sample's labels.
        ('{{ range query "up" }}{{ .Labels.job }}{{ end }}', ()),
        ('{{ range $i, $x := query "up" }}{{ $x.Labels.job }}{{ end }}', ()),
        ("{{ $value | humanizePercentage }} {{ $externalLabels.cluster }}", ()),
    ],
)
def test_labels_read_by_a_template_are_found(text: str, refs: tuple[str, ...]) -> None:
    t = parse_template(text)
    assert t.error is None
    assert t.label_refs == refs


def test_label_tested_in_if_is_guarded() -> None:
    t = parse_template("{{ if $labels.instance }}on {{ $labels.instance }}{{ end }}")
    assert t.error is None
    assert t.guarded == {"instance"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{ $labels.instance ", "unclosed action"),
        ("{{ $nope }}", "undefined variable '$nope'"),
        ("{{ nope 1 }}", "function 'nope' not defined"),
        ("{{ if true }}x", "unexpected EOF"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ else }}", "unexpected {{else}}"),
        ("{{}}", "missing value for command"),
        ("{{ if }}x{{ end }}", "missing value for if"),
        ('{{ "open }}', "unterminated quoted string"),
        ("{{ 1 | }}", "missing value for command"),
        ("{{ (1 }}", "unclosed left paren"),
        ("{{ 1) }}", "unexpected right paren"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ("{{ $labels.a-b }}", "bad character"),
        ("{{/* open comment }}", "unclosed comment"),
        ("{{ if $x := 1 }}{{ end }}{{ $x }}", "undefined variable '$x'"),
    ],
)
def test_template_errors_are_reported(text: str, error: str) -> None:
    t = parse_template(text)
    assert t.error is not None
    assert error in t.error


@pytest.mark.parametrize(
    "text",
    [
        "{{- /* a comment */ -}}text",
        "{{ $x := 1 }}{{ $x }}",
        '{{ with query "up" }}{{ . | first | value | humanize }}{{ end }}',
        "{{ if gt $value 0.5 }}high{{ else if lt $value 0.1 }}low{{ else }}mid{{ end }}",
        '{{ define "x" }}a{{ end }}{{ template "x" . }}',
        "{{ printf `%s` $labels.job }} {{ 0x1F }} {{ -1.5e3 }} {{ 'c' }} {{ true }} {{ nil }}",
        '{{ humanizeDuration (parseDuration "5m") }}',
        "{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ break }}{{ end }}",
    ],
)
def test_valid_templates_parse(text: str) -> None:
    assert parse_template(text).error is None
