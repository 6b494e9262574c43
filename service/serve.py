"""`python -m service.serve`: the service under uvicorn, with a graceful stop on SIGTERM.

uvicorn drains connections before it runs the app's lifespan shutdown, so a readiness flag
cleared there would still read "ready" while the service drains. Here the signal itself clears
it: from the first SIGTERM (or Ctrl+C) /readyz answers 503; for `shutdown_grace_seconds` the
service keeps taking requests (so a load balancer sees it leave), then it stops accepting,
finishes the requests in flight, writes the queued log rows and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn

from forecast.settings import disable_telemetry, get_settings


class DrainingServer(uvicorn.Server):
    """A uvicorn server that calls `on_signal` at the signal, then drains after `grace` seconds."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None], grace: float = 0.0):
        super().__init__(config)
        self.on_signal = on_signal
        self.grace = grace
        self._draining: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_signal()
        if self.grace > 0 and self._draining is None and not self.should_exit:
            self._draining = threading.Timer(self.grace, self._exit)
            self._draining.daemon = True
            self._draining.start()
            return
        super().handle_exit(sig, frame)  # a second signal stops the grace (or forces the exit)

    def _exit(self) -> None:
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises the signal after a graceful stop (the process then dies of it);
            # a stop asked for and done is a normal exit, status 0
            self._captured_signals.clear()


def serve(args: argparse.Namespace, sockets: list[socket.socket] | None = None) -> None:
    """One service process: its own app, champions, poller and log writer."""
    from service.app import create_app

    disable_telemetry()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    settings = get_settings()
    app = create_app(settings)
    state = app.state.service

    def not_ready() -> None:
        state.ready = False

    # loop and http "auto": uvloop and httptools when installed (they are dependencies)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="on",
    )
    DrainingServer(config, not_ready, grace=settings.shutdown_grace_seconds).run(sockets)


def _own_socket(host: str, port: int) -> socket.socket:
    """A listening socket of this worker's own on a port the others share (SO_REUSEPORT): the
    kernel spreads new connections over the workers, where one shared socket lets whichever
    worker wakes first take most keep-alive connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _serve_on_own_socket(args: argparse.Namespace) -> None:
    serve(args, [_own_socket(args.host, args.port)])


def serve_workers(args: argparse.Namespace) -> int:
    """`args.workers` service processes on one port; SIGTERM is passed on to each.

    Returns:
        0 when every worker exited 0, else 1.
    """
    # a port in use fails here, at once, not in each worker (like uvicorn, the workers listen
    # only once their champions are loaded)
    _own_socket(args.host, args.port).close()
    # spawn, not fork: each worker imports and loads on its own, with no parent threads copied
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_serve_on_own_socket, args=(args,), name=f"worker-{i}")
        for i in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def pass_on(sig: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, sig)

    signal.signal(signal.SIGTERM, pass_on)
    # Ctrl+C reaches every process of the group already: passing it on would be a second
    # one, which forces the workers out without draining
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for worker in workers:
        worker.join()
    return 0 if all(w.exitcode == 0 for w in workers) else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="service processes sharing the port (each loads the champions: ~0.5 GB each)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request line (off: /metrics counts every request and the audit log "
        "records every authenticated one)",
    )
    args = parser.parse_args(argv)
    if args.workers > 1:
        sys.exit(serve_workers(args))
    serve(args)


if __name__ == "__main__":
    main()
