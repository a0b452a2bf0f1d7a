"""``lepton keys``, ``lepton whoami``, ``lepton audit``, ``lepton usage``, ``lepton plans`` and
``lepton tenants``: API keys, the caller, the audit trail, each tenant's plan and usage, and deleting
a tenant.

A key's secret is printed once, by ``keys create`` and ``keys rotate``; nothing else prints one.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lepton_ai.access import AuditRecord, CreatedKey, KeyInfo, LimitUsage, TenantDeletion
from lepton_ai.cli.output import client, emit, err, out, state
from lepton_ai.cli.parsing import duration, pairs, parse_since

app = typer.Typer(help="API keys: create (the secret is shown once), list, revoke, rotate.", no_args_is_help=True)
plans_app = typer.Typer(help="Plans: list them, put a tenant on one (role operator).", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Tenants: delete one and everything it has, follow a deletion (role operator).", no_args_is_help=True
)

SHOWN_ONCE = "This secret is shown now and never again: store it (a secret manager, a CI variable) before you go on."


def _iso(moment: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC to the second (``2025-01-31T09:00:00Z``); None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _when(moment: datetime | None, unset: str = "-") -> str:
    """A time for a table: :func:`_iso`, or ``unset``."""
    return _iso(moment) or unset


def _grants_json(grants: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"resource": resource, "role": role} for resource, role in grants]


def _key_json(key: KeyInfo) -> dict[str, Any]:
    times = {"created": key.created, "expires": key.expires, "revoked": key.revoked, "last_used": key.last_used}
    return {**asdict(key), "grants": _grants_json(key.grants), **{k: _iso(v) for k, v in times.items()}}


def _print_secret(created: CreatedKey, what: str) -> None:
    """The new key and its secret: JSON on stdout with --output json (the notice on stderr), else text."""
    key = created.key
    if state.output == "json":
        emit({"key": _key_json(key), "secret": created.secret})
        err.print(SHOWN_ONCE, style="yellow", soft_wrap=True)
        return
    grants = ", ".join(f"{role} on {resource}" for resource, role in key.grants)
    lines = [
        f"{what} {key.id} ({key.name}): role {key.role}" + (f", {grants}" if grants else "")
        + f", tenant {key.tenant}, expires {_when(key.expires, 'never')}",
        f"secret: {created.secret}",
        SHOWN_ONCE,
    ]  # fmt: skip
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


@app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer, inference, editor, deployer, admin or operator.")],
    name: Annotated[
        str | None,
        typer.Option(
            help="A label people recognise: ci, alice-laptop (default, by the platform: ROLE-YYYYMMDD-HHMMSS, UTC)."
        ),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Another tenant (role operator only; default: yours).")] = None,
    expires: Annotated[
        str | None, typer.Option(help="How long it lives: 30d, 12h, 90m (default: until revoked).")
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", help="RESOURCE=ROLE beyond --role, e.g. model/churn=deployer (repeatable)."),
    ] = None,
) -> None:
    """Create an API key and print its secret, the only time it is shown."""
    lifetime = duration(expires, "--expires") if expires is not None else None
    grants = pairs(grant, "--grant")
    with client() as c:
        created = c.keys.create(role, name=name or "", tenant=tenant, expires=lifetime, grants=grants)
    _print_secret(created, "created key")


@app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Another tenant (role operator only; default: yours).")] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Also revoked and expired keys.")] = False,
) -> None:
    """API keys, newest first (never a secret)."""
    with client() as c:
        found = c.keys.list(tenant=tenant, include_inactive=all_keys)
    t = Table("id", "name", "tenant", "role", "state", "created", "expires", "last used")
    for k in found:
        cells = (k.id, k.name, k.tenant, k.role, k.state, _when(k.created), _when(k.expires, "never"))
        t.add_row(*(Text(v) for v in (*cells, _when(k.last_used, "never"))))
    emit([_key_json(k) for k in found], t)


@app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id (key_...) or name.")],
    tenant: Annotated[str | None, typer.Option(help="Its tenant (default: yours).")] = None,
) -> None:
    """Revoke a key: every service refuses it within two seconds; its record stays."""
    with client() as c:
        revoked = c.keys.revoke(key, tenant=tenant)
    emit(_key_json(revoked), Text(f"revoked key {revoked.id} ({revoked.name}) at {_when(revoked.revoked)}"))


@app.command("rotate")
def keys_rotate(
    key: Annotated[str, typer.Argument(help="The key's id (key_...) or name.")],
    grace: Annotated[
        str | None,
        typer.Option(help="How long the old secret keeps working: 1h, 30m (default: revoked at once)."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Its tenant (default: yours).")] = None,
) -> None:
    """Give a key a new secret (same name, role and grants) and print it, the only time it is shown."""
    overlap = duration(grace, "--grace") if grace is not None else None
    with client() as c:
        created = c.keys.rotate(key, tenant=tenant, grace=overlap)
    _print_secret(created, "new key")
    after = f"keeps working for {grace}" if overlap else "is revoked"
    err.print(f"the old secret of {key} {after}", markup=False, highlight=False, soft_wrap=True)


def whoami() -> None:
    """The caller as the platform sees it: tenant, key, role, permissions."""
    with client() as c:
        me = c.whoami()
    info = {
        "tenant": me.tenant,
        "key_id": me.key_id,
        "key_name": me.key_name,
        "role": me.role,
        "permissions": list(me.permissions),
        "grants": _grants_json(me.grants),
        "expires": _iso(me.expires),
    }
    t = Table("field", "value")
    t.add_row("tenant", Text(me.tenant))
    t.add_row("key", Text(f"{me.key_id} ({me.key_name})"))
    t.add_row("role", Text(me.role))
    t.add_row("permissions", Text(", ".join(me.permissions) or "-"))
    t.add_row("grants", Text(", ".join(f"{role} on {resource}" for resource, role in me.grants) or "-"))
    t.add_row("expires", Text(_when(me.expires, "never")))
    emit(info, t)


def _record_json(r: AuditRecord) -> dict[str, Any]:
    return {**asdict(r), "time": _iso(r.time)}


def audit(
    since: Annotated[
        str | None,
        typer.Option(help="From then on: 1h, 2d back from now, or an ISO time (default: the last 24 hours)."),
    ] = None,
    principal: Annotated[str | None, typer.Option(help="Only this caller's: key:<id> or a key id.")] = None,
    resource: Annotated[
        str | None, typer.Option(help="Only about this resource (model/churn), or a prefix ending in / (dataset/).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many records (1000 at most).")] = 1000,
    tenant: Annotated[str | None, typer.Option(help="Another tenant's trail (role operator only).")] = None,
) -> None:
    """The audit trail, oldest first: each mutating call and each refusal, who made it and how it ended."""
    start = parse_since(since) if since is not None else None
    with client() as c:
        trail = c.audit(start, principal=principal, resource=resource, limit=limit, tenant=tenant)
    t = Table("time", "principal", "service", "method", "resource", "outcome", "detail")
    for r in trail:
        outcome = Text(r.outcome, style="" if r.outcome == "OK" else "red")
        cells = (_when(r.time), r.principal, r.service, r.method_name, r.resource)
        t.add_row(*(Text(v) for v in cells), outcome, Text(r.detail))
    emit({"records": [_record_json(r) for r in trail], "truncated": trail.truncated}, t)
    if trail.truncated:
        err.print(
            f"more records matched than the {len(trail)} shown: narrow with --since, --principal or --resource",
            style="yellow",
            soft_wrap=True,
        )


def _shown(line: LimitUsage, value: int) -> str:
    """A usage or limit value for the table: bytes in binary units, seconds and rates with their unit."""
    if line.unit == "bytes":
        size = float(value)
        for unit in ("B", "KiB", "MiB", "GiB"):
            if size < 1024:
                return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            size /= 1024
        return f"{size:.1f} TiB"
    return f"{value} {line.unit}".rstrip() if line.unit == "s" else f"{value}{line.unit}"


def usage(
    tenant: Annotated[str | None, typer.Option(help="Another tenant's usage (role operator only).")] = None,
) -> None:
    """Your plan, and what your tenant uses of each of its limits (metered from the platform's events)."""
    with client() as c:
        found = c.usage(tenant)
    t = Table("limit", "used", "limit", "left")
    for line in found.limits:
        used = _shown(line, line.used) if line.metered else "-"
        limit = _shown(line, line.maximum) if line.maximum else "none"
        left = _shown(line, max(line.maximum - line.used, 0)) if line.metered and line.maximum else "-"
        t.add_row(Text(line.limit), Text(used), Text(limit), Text(left))
    emit(
        {
            "tenant": found.tenant,
            "plan": found.plan,
            "month": found.month,
            "metered_at": _iso(found.metered_at),
            "limits": [asdict(line) for line in found.limits],
        },
        t,
    )
    if state.output != "json":
        metered = _when(found.metered_at, "no event yet")
        err.print(f"tenant {found.tenant}, plan {found.plan}; last metered {metered}", soft_wrap=True, highlight=False)


@plans_app.command("list")
def plans_list() -> None:
    """The plans there are and their limits (0: none); * marks the default."""
    with client() as c:
        found = c.plans.list()
    names = [name for name in (found[0].limits if found else {})]
    t = Table("plan", *names)
    for plan in found:
        t.add_row(Text(plan.name + (" *" if plan.default else "")), *(Text(str(plan.limits.get(n, 0))) for n in names))
    emit([asdict(plan) for plan in found], t)


@plans_app.command("set")
def plans_set(
    tenant: Annotated[str, typer.Argument(help="The tenant.")],
    plan: Annotated[str, typer.Argument(help="trial, team or unlimited (lepton plans list).")],
    limit: Annotated[
        list[str] | None,
        typer.Option(
            "--limit", help="NAME=VALUE: a limit of this tenant alone, e.g. datasets=50 (0: none; repeatable)."
        ),
    ] = None,
) -> None:
    """Put a tenant on a plan (role operator), with limits of its own where it differs."""
    limits: dict[str, int] = {}
    for name, value in pairs(limit, "--limit").items():
        if not value.isdigit():
            raise typer.BadParameter(f"expected NAME=<whole number>, got {name}={value}", param_hint="--limit")
        limits[name] = int(value)
    with client() as c:
        assigned = c.plans.set(tenant, plan, limits=limits)
    info = {**asdict(assigned), "assigned_at": _iso(assigned.assigned_at)}
    own = ", ".join(f"{k}={v}" for k, v in assigned.overrides.items())
    emit(info, Text(f"tenant {assigned.tenant} is on plan {assigned.plan}" + (f" with {own}" if own else "")))


def _deletion_json(deletion: TenantDeletion) -> dict[str, Any]:
    purged = [{**asdict(p), "purged_at": _iso(p.purged_at)} for p in deletion.purged]
    times = {"requested_at": _iso(deletion.requested_at), "done_at": _iso(deletion.done_at)}
    return {**asdict(deletion), **times, "purged": purged, "pending": list(deletion.pending), "done": deletion.done}


def _keys_erased(deletion: TenantDeletion) -> str:
    return f"{deletion.keys} key{'' if deletion.keys == 1 else 's'} erased"


def _print_deletion(deletion: TenantDeletion) -> None:
    """A line per service (what it erased, or pending) and a line on the whole, or JSON."""
    t = Table("service", "records", "objects", "messages", "deployments", "purged at")
    for p in deletion.purged:
        counts = (p.records, p.objects, p.messages, p.deployments)
        t.add_row(Text(p.service), *(Text(str(n)) for n in counts), Text(_when(p.purged_at)))
    for service in deletion.pending:
        t.add_row(Text(service), *(Text("-") for _ in range(4)), Text("pending", style="yellow"))
    services = len(deletion.purged) + len(deletion.pending)
    if deletion.done:
        summary = (
            f"tenant {deletion.tenant} deleted: {_keys_erased(deletion)}, {len(deletion.purged)} services "
            f"purged, done at {_when(deletion.done_at)}"
        )
    else:
        summary = (
            f"tenant {deletion.tenant}: deletion under way since {_when(deletion.requested_at)}, "
            f"{len(deletion.purged)} of {services} services purged, {_keys_erased(deletion)}; still to report: "
            f"{', '.join(deletion.pending) or '-'} (lepton tenants deletion {deletion.tenant} follows it)"
        )
    emit(_deletion_json(deletion), Group(t, Text(summary)))


@tenants_app.command("delete")
def tenants_delete(
    tenant: Annotated[str, typer.Argument(help="The tenant to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Delete it and everything it has: this cannot be undone.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until every service has erased its part.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait, with --wait.")] = 120.0,
) -> None:
    """Delete a tenant and everything it has, for good (role operator): keys, data, models, deployments, events."""
    if not yes:
        err.print(
            Text.assemble(
                ("error:", "red"),
                f" deleting tenant {tenant} erases its keys, datasets, models, jobs, deployments, logs and events, "
                "and cannot be undone: pass --yes to delete it",
            ),
            soft_wrap=True,
        )
        raise typer.Exit(2)
    with client() as c:
        deletion = c.tenants.delete(tenant, confirm=tenant, wait=wait, timeout=timeout)
    _print_deletion(deletion)


@tenants_app.command("deletion")
def tenants_deletion(tenant: Annotated[str, typer.Argument(help="The deleted tenant.")]) -> None:
    """How far a tenant's deletion has come: what each service erased, and those still to report."""
    with client() as c:
        deletion = c.tenants.deletion(tenant)
    _print_deletion(deletion)
