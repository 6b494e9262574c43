"""What the `forecast` commands' options share: a bad value is a usage error naming the option,
never a traceback."""

from __future__ import annotations

import typer


def moment_option(value: str | None) -> str | None:
    """Check an `--as-of` value and give it back as the store keeps moments (UTC, no zone)."""
    from forecast.features.records import moment

    if value is None:
        return None
    try:
        return moment(value).isoformat()
    except (ValueError, TypeError, OverflowError):
        raise typer.BadParameter(
            f"{value!r} is not a date or moment (e.g. 2026-11-15 or 2026-11-15T09:00Z)"
        ) from None
