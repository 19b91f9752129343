"""The baseline of the engine benchmark: a bare aiokafka consume-parse-produce-commit loop.

Run as a subprocess (like the worker) so both get a process of their own:
`python -m bench.bare_client --bootstrap B --source T --target T2 --group G --count N
[--fanout K]`. With `--fanout K` each event read is written K times (one record per
`send()`, as many records as the journey's event makes), the I/O shape of the engine
without any of its work. Prints one JSON line: records, seconds from the first record
read to the last commit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def consume_parse_produce(
    bootstrap: str,
    source: str,
    target: str,
    group: str,
    count: int,
    timeout: float,
    fanout: int = 1,
) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    # The same producer settings as the engine's faust app (acks from all replicas).
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    done = 0
    first: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while done < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            if first is None:
                first = time.monotonic()
            futures = []
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value or b"{}")
                    for n in range(fanout):
                        out = orjson.dumps(
                            {
                                "event_id": event.get("event_id"),
                                "profile_id": event.get("profile_id"),
                                "type": event.get("type"),
                                "n": n,
                            }
                        )
                        futures.append(await producer.send(target, out, key=record.key))
                    done += 1
            await asyncio.gather(*futures)
            await consumer.commit()
        last = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
    seconds = last - first if first is not None else 0.0
    return {"records": done, "seconds": seconds, "per_second": done / seconds if seconds else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--fanout", type=int, default=1, help="records written per event")
    args = parser.parse_args()
    result = asyncio.run(
        consume_parse_produce(
            args.bootstrap,
            args.source,
            args.target,
            args.group,
            args.count,
            args.timeout,
            args.fanout,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
