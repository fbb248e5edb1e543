"""The service's gRPC server: ``grpc.aio`` on an event loop of its own.

Register, Upload, Report, FetchUpdate, the admin API and health checks are synchronous
handlers and run on a thread pool, as they always did; Subscribe is asynchronous and runs
on the loop, so an open update stream costs a coroutine, not a thread (one process holds
thousands). :class:`UpdateNotifier` wakes those streams when what a device may be served
changes (a publication, a rollout step, a pin), instead of each stream polling.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class AsyncRpcServer:
    """A ``grpc.aio`` server run on its own event-loop thread, driven from sync code with
    the calls of :class:`grpc.Server` that the service uses (``add_*``, ``start``,
    ``stop(grace).wait()``)."""

    def __init__(self, pool: ThreadPoolExecutor, *, streams: ThreadPoolExecutor,
                 interceptors: list[Any], options: list[tuple[str, Any]],
                 maximum_concurrent_rpcs: int) -> None:
        import grpc

        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(streams)  # blocking calls of async handlers
        self._thread = threading.Thread(target=self.loop.run_forever, name="edgecl-rpc-loop",
                                        daemon=True)
        self._thread.start()

        async def make() -> Any:
            return grpc.aio.server(migration_thread_pool=pool, interceptors=interceptors,
                                   options=options,
                                   maximum_concurrent_rpcs=maximum_concurrent_rpcs)

        self.server = self._run(make())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.server.add_registered_method_handlers(service, handlers)

    def add_insecure_port(self, address: str) -> int:
        return int(self.server.add_insecure_port(address))

    def add_secure_port(self, address: str, credentials: Any) -> int:
        return int(self.server.add_secure_port(address, credentials))

    def start(self) -> None:
        """Start serving (returns once the server accepts calls)."""
        self._run(self.server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new calls, give running ones ``grace`` seconds, then cancel them; the
        returned event is set once the server stopped (and its loop with it)."""
        done = threading.Event()
        future: Future[Any] = asyncio.run_coroutine_threadsafe(self.server.stop(grace),
                                                               self.loop)

        def stopped(_: Any) -> None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            done.set()

        future.add_done_callback(stopped)
        return done


class UpdateNotifier:
    """A generation number bumped (from any thread) whenever what devices may be served
    changes; Subscribe streams wait on it on the event loop."""

    def __init__(self) -> None:
        self.generation = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bump(self) -> None:
        """Something servable changed: wake every waiting stream."""
        with self._lock:
            self.generation += 1
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop stopped meanwhile
                pass

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return when the generation moves past ``seen``, or after ``timeout`` seconds."""
        if self._loop is None:
            with self._lock:
                self._loop = asyncio.get_running_loop()
        if self._event is None:
            self._event = asyncio.Event()
        if self.generation != seen:
            return
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
