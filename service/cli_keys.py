"""`forecast keys`: create and revoke the service's API keys (stored hashed)."""

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
    from forecast.keys import create_key, engine_for
    from forecast.settings import get_settings

    try:
        key = create_key(
            engine_for(get_settings().service_database_url), role, rep_id=rep_id, label=label
        )
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(key)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The id: the part after `fk_`.")]) -> None:
    """Revoke a key by its id."""
    from forecast.keys import engine_for, revoke_key
    from forecast.settings import get_settings

    if not revoke_key(engine_for(get_settings().service_database_url), key_id):
        typer.echo(f"no key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
