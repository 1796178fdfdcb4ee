"""Deploy attribution: which recent deploy to blame, and which to rule out, and why.

Why not "the alerting service deployed, blame it": the cause often sits in a dependency,
and showing the alerting service's commit next to a culprit in another service invites the
wrong rollback. A deploy is a suspect only when the traces tie it to the failure:
- the deploy is of the service whose own operation stands out (the culprit's service);
- or the service runs a version on failing traces that healthy traces of the same service
  do not run (a canary, a half-finished rollout): strong even without a deploy record;
- or the service calls the culprit on the failing path and carries what only failing
  traces carry (a feature flag), as when a new code path behind a flag issues a bad query.
Any other recent deploy is ruled out, with the reason: not on the failing traces, or its
spans behave the same in healthy traces (same version on both, nothing of its own stands
out).
"""

from __future__ import annotations

from enricher.analysis.model import DeployVerdict
from enricher.bundle.model import EvidenceBundle
from enricher.sources.deploys import DeployContext


def judge_deploys(bundle: EvidenceBundle) -> list[DeployVerdict]:
    out = [_judge(ctx, bundle) for ctx in bundle.deploy]
    order = {"suspect": 0, "ruled_out": 1, "no_recent_deploy": 2}
    return sorted(out, key=lambda v: order[v.verdict])


def deploy_item_ids(bundle: EvidenceBundle, service: str) -> list[str]:
    return [i.id for i in bundle.items if i.deploy is not None and i.deploy.service == service]


def describe(ctx: DeployContext) -> str:
    text = ctx.service
    if ctx.current_version:
        text += f" {ctx.current_version}"
    if ctx.current_commit:
        text += f" ({ctx.current_commit})"
    if ctx.minutes_before_alert is not None:
        text += f" deployed {ctx.minutes_before_alert:g} min before the alert"
    return text


def _judge(ctx: DeployContext, bundle: EvidenceBundle) -> DeployVerdict:
    ids = deploy_item_ids(bundle, ctx.service)
    ids += [
        i.id
        for i in bundle.items
        if i.attribute is not None
        and i.attribute.key == "service.version"
        and i.attribute.service == ctx.service
    ]
    v = DeployVerdict(
        service=ctx.service,
        version=ctx.current_version,
        commit=ctx.current_commit,
        minutes_before_alert=ctx.minutes_before_alert,
        verdict="no_recent_deploy",
        reason="no deploy in the lookback window",
        evidence_ids=ids,
    )
    recent = ctx.minutes_before_alert is not None and ctx.minutes_before_alert >= 0
    only_failing = [x for x in ctx.failing_versions if x not in ctx.healthy_versions]
    if only_failing and ctx.healthy_versions:
        v.verdict = "suspect"
        v.version = only_failing[0]
        v.reason = (
            f"version {only_failing[0]} runs on failing traces only "
            f"(healthy traces run {', '.join(ctx.healthy_versions)})"
        )
        if recent:
            v.reason += f"; deployed {ctx.minutes_before_alert:g} min before the alert"
        return v
    if not recent:
        return v
    if ctx.role == "culprit" and ctx.standout_ops:
        v.verdict = "suspect"
        v.reason = (
            f"its own operation {ctx.standout_ops[0]} stands out on the failing traces, "
            f"and it was deployed {ctx.minutes_before_alert:g} min before the alert"
        )
        return v
    if ctx.calls_culprit and ctx.failing_only_flags:
        v.verdict = "suspect"
        v.reason = (
            f"it calls the culprit on the failing path with {ctx.failing_only_flags[0]}, "
            f"seen only on failing traces, and was deployed {ctx.minutes_before_alert:g} "
            "min before the alert"
        )
        return v
    v.verdict = "ruled_out"
    if not ctx.on_failing_path and ctx.role != "culprit":
        v.reason = "deployed recently, but the service is not on the failing traces"
    else:
        both = sorted(set(ctx.failing_versions) & set(ctx.healthy_versions))
        same = f"failing and healthy traces both run {', '.join(both)}" if both else ""
        v.reason = (
            "deployed recently, but "
            + (same + ", and " if same else "")
            + "its own spans behave the same in healthy traces"
        )
        if not bundle.culprits and not same:
            v.reason = "deployed recently, but nothing on the failing traces ties it to them"
    return v
