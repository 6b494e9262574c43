"""`python -m service.serve`: the service under uvicorn, with a graceful stop on SIGTERM.

uvicorn drains connections before it runs the app's lifespan shutdown, so a readiness flag
cleared there would still read "ready" while the service drains. Here the signal itself clears
it: from the first SIGTERM (or Ctrl+C) /readyz answers 503; for `shutdown_grace_seconds` the
service keeps taking requests (so a load balancer sees it leave), then it stops accepting,
finishes the requests in flight, writes the queued log rows and exits 0.

With `--workers N`, this process is a supervisor: it listens once every worker has loaded its
champions, accepts each connection and passes it to the workers in turn (see `Supervisor`), and
at SIGTERM tells the workers to report not ready, keeps dispatching through the grace, then
closes the port and the channels (no more connections will come); the workers drain and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from forecast.settings import SettingsError, disable_telemetry, get_settings
from service.metrics import MULTIPROCESS_DIR

log = logging.getLogger(__name__)


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


def serve(args: argparse.Namespace, channel: socket.socket | None = None) -> None:
    """One service process: its own app, champions, poller and log writer; on its own port,
    or, under `serve_workers`, on the connections passed over `channel`."""
    from service.app import create_app

    disable_telemetry()
    # a service's log is read line by line: no progress bars from MLflow's model downloads
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
    if channel is None:
        DrainingServer(config, not_ready, grace=settings.shutdown_grace_seconds).run()
    else:
        DispatchedServer(config, not_ready, channel).run()


CRASH_LOOP_SECONDS = 30.0  # a worker dying younger than this is restarted after a pause

# what the supervisor and a worker say over their channel (besides passing connections)
READY = b"ready"  # worker: champions loaded, send connections
STOPPING = b"stopping"  # supervisor: a stop was asked for, report not ready


class DispatchedServer(DrainingServer):
    """A worker with no listening socket: it serves the connections the supervisor accepted and
    passed over `channel`, until the supervisor closes the channel.

    The supervisor, not the worker, decides when connections stop coming (after the grace at
    SIGTERM), so a stop (its message, or a signal to this process) only clears readiness; the
    closed channel starts the drain. A second signal to this process stops it at once.
    """

    def __init__(
        self, config: uvicorn.Config, on_signal: Callable[[], None], channel: socket.socket
    ):
        super().__init__(config, on_signal)
        self.channel = channel
        self._signalled = False
        self._connecting: set[asyncio.Task] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan (champions loaded), no listener
        loop = asyncio.get_running_loop()
        config, state = self.config, self.server_state

        def protocol() -> asyncio.Protocol:  # what uvicorn makes for each accepted connection
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=self.lifespan.state, _loop=loop
            )

        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._take_connections, loop, protocol)
        self.channel.send(READY)

    def _take_connections(
        self, loop: asyncio.AbstractEventLoop, protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 1024, 64)
        except BlockingIOError:
            return
        if not message:  # the supervisor closed the channel: no more connections, drain
            loop.remove_reader(self.channel.fileno())
            self.should_exit = True
            return
        if message == STOPPING:
            self.on_signal()
        for fd in fds:
            task = loop.create_task(self._connect(loop, protocol, socket.socket(fileno=fd)))
            self._connecting.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._connecting.discard)

    @staticmethod
    async def _connect(
        loop: asyncio.AbstractEventLoop,
        protocol: Callable[[], asyncio.Protocol],
        connection: socket.socket,
    ) -> None:
        try:
            await loop.connect_accepted_socket(protocol, connection)
        except OSError:  # the client left before it was served
            connection.close()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._signalled:
            self._signalled = True
            self.on_signal()  # not ready at once; connections keep coming through the grace
            return
        uvicorn.Server.handle_exit(self, sig, frame)  # a second signal: stop now


def _listener(host: str, port: int) -> socket.socket:
    """The service's socket, bound (a port in use fails here, at once) but not yet listening:
    until every worker has loaded its champions a connection is refused, not left waiting."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Accepts every connection and passes it to the workers in turn (round robin).

    Left to the kernel, connections spread unevenly: workers sharing one socket take them as
    they happen to wake, and with a socket each (SO_REUSEPORT) the kernel hashes them, so 8
    keep-alive connections often split 6/2 or 5/3 and the busier worker sets the p99
    (docs/benchmarks.md). Node's cluster module hands connections out the same way.
    """

    def __init__(
        self,
        listener: socket.socket,
        start_worker: Callable[[int], tuple[socket.socket, BaseProcess]],
        workers: int,
        grace: float,
    ):
        self.listener = listener
        self.start_worker = start_worker
        self.grace = grace
        self.channels: dict[int, socket.socket] = {}  # per slot, its worker's
        self.workers: dict[int, BaseProcess] = {}
        self.started_at: dict[int, float] = {}
        self.crashes = dict.fromkeys(range(workers), 0)  # quick deaths in a row, per slot
        self.restart_at: dict[int, float] = {}  # slots waiting for a new worker
        self.alive: set[int] = set()
        self.ready: list[int] = []  # workers taking connections, in turn
        self.turn = 0
        self.listening = False  # from when every living worker is ready
        self.stop_at: float | None = None
        self.selector = selectors.DefaultSelector()
        for i in range(workers):
            self._start(i)

    def _start(self, i: int) -> None:
        channel, worker = self.start_worker(i)
        self.channels[i], self.workers[i], self.started_at[i] = channel, worker, time.monotonic()
        self.selector.register(channel, selectors.EVENT_READ, i)
        self.alive.add(i)

    def run(self) -> int:
        """Until a signal's grace is over; 0 when every worker exits 0. A worker that dies
        meanwhile is replaced (see `_gone`)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        self.selector.register(wake_r, selectors.EVENT_READ)
        try:
            while self.alive or self.restart_at:
                if self.stop_at is not None and time.monotonic() >= self.stop_at:
                    break
                self._restart_due()
                for key, _ in self.selector.select(self._timeout()):
                    if key.fileobj is self.listener:
                        self._dispatch()
                    elif key.fileobj is wake_r:
                        with contextlib.suppress(BlockingIOError):
                            wake_r.recv(64)
                    else:
                        self._hear(key.data)
        finally:
            # refuse new connections, then tell each worker none will come: they drain and exit
            self.listener.close()
            for channel in self.channels.values():
                channel.close()
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        for worker in self.workers.values():
            worker.join()
        return 0 if all(w.exitcode == 0 for w in self.workers.values()) else 1

    def _timeout(self) -> float | None:
        """Until the grace ends or a slot's new worker is due, whichever is first."""
        due = [*self.restart_at.values(), *([self.stop_at] if self.stop_at is not None else [])]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _restart_due(self) -> None:
        for i, at in list(self.restart_at.items()):
            if time.monotonic() >= at and self.stop_at is None:
                del self.restart_at[i]
                log.warning("starting a new worker %d", i)
                self._start(i)

    def _signal(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_at is not None:  # a second signal: stop at once
            self.stop_at = time.monotonic()
            return
        self.stop_at = time.monotonic() + self.grace
        # workers stop reporting ready at once: told, not signalled (a signal may have reached
        # them too, from Ctrl+C or a service manager; two would force them out undrained)
        for i in self.alive:
            with contextlib.suppress(OSError):
                self.channels[i].send(STOPPING)

    def _hear(self, i: int) -> None:
        """A worker's message: ready, or gone (its end of the channel closed)."""
        try:
            message = self.channels[i].recv(64)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if message == READY:
            self.ready.append(i)
        else:
            self._gone(i)
        if not self.listening and self.ready and set(self.ready) == self.alive:
            self.listener.listen(2048)
            self.listener.setblocking(False)
            self.selector.register(self.listener, selectors.EVENT_READ)
            self.listening = True
            log.info("%d workers ready on %s:%d", len(self.ready), *self.listener.getsockname())

    def _gone(self, i: int) -> None:
        """A worker died (or stopped): out of the turn; replaced unless the service is
        stopping, at once the first time, after a growing pause if it keeps dying young."""
        worker = self.workers[i]
        worker.join(timeout=5)
        if os.environ.get(MULTIPROCESS_DIR):  # its live gauges leave /metrics; counters stay
            mark_process_dead(worker.pid, os.environ[MULTIPROCESS_DIR])
        self.selector.unregister(self.channels[i])
        self.channels[i].close()
        self.alive.discard(i)
        if i in self.ready:
            self.ready.remove(i)
        if self.stop_at is not None:
            log.info("worker %d (pid %s) stopped", i, worker.pid)
            return
        young = time.monotonic() - self.started_at[i] < CRASH_LOOP_SECONDS
        self.crashes[i] = self.crashes[i] + 1 if young else 0
        pause = min(2.0 ** self.crashes[i] - 1, 30.0)
        log.error("worker %d (pid %s) died (exit %s): a new one in %.0f s",
                  i, worker.pid, worker.exitcode, pause)  # fmt: skip
        self.restart_at[i] = time.monotonic() + pause

    def _dispatch(self) -> None:
        """Every waiting connection to the next worker in turn (one that fails is skipped)."""
        while True:
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            with connection:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for _ in range(len(self.ready)):
                    i = self.ready[self.turn % len(self.ready)]
                    self.turn += 1
                    try:
                        socket.send_fds(self.channels[i], [b"c"], [connection.fileno()])
                        break
                    except OSError:
                        continue  # gone: its channel reports it and it leaves the turn


def serve_workers(args: argparse.Namespace) -> int:
    """`args.workers` service processes behind one port: the supervisor accepts each connection
    and passes it to a worker in turn, and keeps the grace at SIGTERM (see `Supervisor`).

    Returns:
        0 when every worker exited 0, else 1.
    """
    listener = _listener(args.host, args.port)
    # every worker writes its metrics here, and each one's /metrics sums them all (the variable
    # is read when prometheus_client is imported: in the workers, after the spawn)
    metrics_dir = tempfile.mkdtemp(prefix="forecast-metrics-")
    os.environ[MULTIPROCESS_DIR] = metrics_dir
    # spawn, not fork: each worker imports and loads on its own, with no parent threads copied
    context = multiprocessing.get_context("spawn")

    def start_worker(i: int) -> tuple[socket.socket, BaseProcess]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = context.Process(target=serve, args=(args, theirs), name=f"worker-{i}")
        worker.start()
        theirs.close()
        ours.setblocking(False)  # a worker that stops reading is skipped, never waited for
        return ours, worker

    grace = get_settings().shutdown_grace_seconds
    try:
        return Supervisor(listener, start_worker, args.workers, grace).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="service processes behind the port, each connection passed to the next in turn "
        "(each loads the champions: ~0.5 GB each)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request line (off: /metrics counts every request and the audit log "
        "records every authenticated one)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    try:
        get_settings()
    except SettingsError as err:  # refused at start, named: never a traceback, never half up
        parser.exit(2, f"forecast service: a setting cannot be used: {err}\n")
    if args.workers > 1:
        sys.exit(serve_workers(args))
    serve(args)


if __name__ == "__main__":
    main()
