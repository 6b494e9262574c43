"""`forecast serve`: the same as `python -m service.serve`, from the `forecast` command."""

from __future__ import annotations

from typing import Annotated

import typer


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Service processes behind the port, each connection passed to the next in "
            "turn (each loads the champions: ~0.5 GB each)."
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request line.")
    ] = False,
) -> None:
    """Serve the champions over HTTP: the API, its OpenAPI docs and the dashboard."""
    from service.serve import main

    argv = ["--host", host, "--port", str(port), "--workers", str(workers)]
    main([*argv, "--log-level", log_level, *(["--access-log"] if access_log else [])])
