"""The baseline of the connector benchmark: bare aiohttp POSTs to the sandbox, no Kafka.

`python -m bench.bare_http --url URL --calls N --in-flight K --number ID ...` posts the
same template message the connector sends, K at a time, round robin over the numbers,
to a sandbox without a rate cap. Prints one JSON line: calls, seconds, per_second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import aiohttp
import orjson


async def post_all(url: str, numbers: list[str], calls: int, in_flight: int) -> dict[str, Any]:
    token = os.environ["WA_SANDBOX_TOKEN"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    ok = 0
    next_call = 0

    def body(i: int) -> bytes:
        return orjson.dumps(
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": f"3461{i % 10_000_000:07d}",
                "type": "template",
                "template": {
                    "name": "cart_reminder",
                    "language": {"code": "es"},
                    "components": [
                        {
                            "type": "body",
                            "parameters": [
                                {"type": "text", "text": "Ana"},
                                {"type": "text", "text": "42"},
                            ],
                        }
                    ],
                },
            }
        )

    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def lane() -> None:
            nonlocal ok, next_call
            while next_call < calls:
                i = next_call
                next_call += 1
                target = f"{url}/v21.0/{numbers[i % len(numbers)]}/messages"
                async with session.post(target, data=body(i), headers=headers) as response:
                    await response.read()
                    ok += response.status == 200

        started = time.monotonic()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        seconds = time.monotonic() - started
    return {"calls": calls, "ok": ok, "seconds": seconds, "per_second": calls / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--number", action="append", dest="numbers", required=True)
    args = parser.parse_args()
    result = asyncio.run(post_all(args.url, args.numbers, args.calls, args.in_flight))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
