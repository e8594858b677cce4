"""Run a gateway under uvicorn in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TextIO

import redis.exceptions
import uvicorn

from eventbus.gateway._app import Gateway, build_app
from eventbus.gateway._config import GatewayConfig

__all__ = ["serve"]

log = logging.getLogger("eventbus.gateway")

READY_LINE = "eventbus gateway listening on http://{host}:{port} (node {node})"


def _ws_implementation() -> str:
    """uvicorn's WebSocket implementation: ``wsproto`` when importable, else ``websockets-sansio``.

    wsproto comes with python-engineio (through simple-websocket); the gateway's load
    benchmark (benchmarks/bench_gateway.py) measured it cheaper per frame sent than
    ``websockets-sansio`` for fan-outs to many sockets.
    """
    try:
        import wsproto  # noqa: F401
    except ImportError:
        return "websockets-sansio"
    return "wsproto"


def serve(
    config: GatewayConfig,
    *,
    log_level: str = "warning",
    announce: TextIO | None = None,
    ready: Callable[[Gateway, int], None] | None = None,
) -> int:
    """Serve ``config`` until SIGINT/SIGTERM, then stop gracefully; return an exit code.

    A stop closes every WebSocket (clients see a disconnect and reconnect elsewhere),
    removes this node's presence and client record, and returns 0. When the server is
    listening, one line ``eventbus gateway listening on http://HOST:PORT (node ID)`` goes
    to ``announce`` (default stdout) and ``ready(gateway, port)`` is called.

    Returns:
        0 after a clean stop; 1 if the gateway could not start (Redis unreachable, the
        port in use: the reason is logged).
    """
    gateway, app = build_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=log_level,
            lifespan="on",
            ws=_ws_implementation(),
            timeout_graceful_shutdown=max(1, round(config.shutdown_timeout)),
            # The gateway's own ping/pong (Engine.IO) detects dead peers.
            ws_ping_interval=None,
        )
    )

    async def main() -> int:
        # Start here rather than in uvicorn's lifespan (where it is a no-op then): a
        # failure is one log line and exit 1, not uvicorn's SystemExit inside a task.
        try:
            await gateway.start()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            log.error("the gateway could not start: Redis at %s: %s", config.redis_config.url, exc)
            await gateway.stop()
            return 1
        except Exception:
            log.exception("the gateway could not start")
            await gateway.stop()
            return 1
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            port = config.port
            for s in server.servers:
                for sock in s.sockets:
                    port = sock.getsockname()[1]
            out = announce or sys.stdout
            out.write(READY_LINE.format(host=config.host, port=port, node=gateway.node_id) + "\n")
            out.flush()
            if ready is not None:
                ready(gateway, port)
        await task
        return 0 if server.started else 1

    # uvicorn captures SIGINT/SIGTERM while serving and re-raises them after its
    # graceful shutdown: with these no-op handlers in place, that ends quietly here.
    previous = {
        sig: signal.signal(sig, lambda _s, _f: None) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return asyncio.run(main())
    except SystemExit as exc:  # uvicorn exits 3 when the lifespan startup failed
        if exc.code in (0, None):
            return 0
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
