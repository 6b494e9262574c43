"""`forecast keys`: create, list and revoke the service's API keys (stored hashed)."""

from __future__ import annotations

from typing import Annotated

import typer

keys_app = typer.Typer(help="API keys for the service: shown once, stored only as a hash.")


@keys_app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", help="crm, rep, manager or admin.")],
    rep_id: Annotated[
        str | None, typer.Option("--rep-id", help="The person a rep or manager key acts for.")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note: who holds it.")] = None,
) -> None:
    """Create a key and print it; it cannot be shown again."""
    from forecast.settings import get_settings
    from service.keys import create_key, engine_for

    if rep_id is not None and (problem := _unknown_rep(rep_id)):
        typer.echo(problem, err=True)
        raise typer.Exit(2)
    try:
        key = create_key(
            engine_for(get_settings().service_database_url), role, rep_id=rep_id, label=label
        )
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(key)


def _unknown_rep(rep_id: str) -> str | None:
    """Why `rep_id` names nobody in the stored CRM (reps, or the deals' owners), or None."""
    import difflib

    from forecast.data.store import StoreEmptyError, read_store

    try:
        tables = read_store(tables=["reps", "deals"])
    except StoreEmptyError:
        return "no CRM data yet to check the rep against: import or generate it first"
    known = set(tables.reps["rep_id"].dropna()) | set(tables.deals["rep_id"].dropna())
    if rep_id in known:
        return None
    close = difflib.get_close_matches(rep_id, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"no rep {rep_id!r} in the stored CRM (its reps or its deals' owners){hint}"


@keys_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every key: id, role, person, label, created and revoked (never the secret)."""
    import json

    from forecast.settings import get_settings
    from service.keys import engine_for, list_keys

    keys = list_keys(engine_for(get_settings().service_database_url))
    if as_json:
        typer.echo(json.dumps(keys, indent=2, default=str))
        return
    if not keys:
        typer.echo("no keys yet: `forecast keys create --role admin`")
        return
    for key in keys:
        state = f"revoked {key['revoked_at']:%Y-%m-%d}" if key["revoked_at"] else "active"
        who = f" {key['rep_id']}" if key["rep_id"] else ""
        label = f"  {key['label']}" if key["label"] else ""
        typer.echo(
            f"{key['key_id']}  {key['role']}{who}  {key['created_at']:%Y-%m-%d}  {state}{label}"
        )


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The id: the part after `fk_`.")]) -> None:
    """Revoke a key by its id."""
    from forecast.settings import get_settings
    from service.keys import engine_for, revoke_key

    if not revoke_key(engine_for(get_settings().service_database_url), key_id):
        typer.echo(f"no key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
