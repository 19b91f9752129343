"""The WhatsApp Cloud API sandbox for benchmarks, in a process of its own, quiet.

`python -m bench.sandbox_server --port P --rate R --number ID [--number ID ...]`; the
bearer token comes from WA_SANDBOX_TOKEN. Serves the bench templates (cart_reminder in
es and en, two body parameters) on 127.0.0.1 and logs only warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

import structlog

from connectors.whatsapp.sandbox import SandboxConfig, Template, run_sandbox
from engine.worker.gctuning import tune_gc

TEMPLATES = (
    Template(
        name="cart_reminder",
        language="es",
        category="marketing",
        body="Hola {{1}}, te has dejado artículos por valor de {{2}}.",
    ),
    Template(
        name="cart_reminder",
        language="en",
        category="marketing",
        body="Hi {{1}}, you left items worth {{2}} in your cart.",
    ),
)


async def serve(config: SandboxConfig) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_sandbox(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="per number; 0: no cap")
    parser.add_argument("--number", action="append", dest="numbers", required=True)
    args = parser.parse_args()
    # At a thousand calls a second, an info line per call is a real share of the CPU.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING)
    config = SandboxConfig(
        host="127.0.0.1",
        port=args.port,
        token=os.environ["WA_SANDBOX_TOKEN"],
        phone_number_ids=tuple(args.numbers),
        templates=TEMPLATES,
        rate_per_second=args.rate or None,
        seed=1,
    )
    # The sandbox stands in for Meta: what it spends here, the workers it serves lose.
    tune_gc()
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
