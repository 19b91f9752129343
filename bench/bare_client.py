"""The baseline of the engine benchmark: a bare aiokafka consume-parse-produce-commit loop.

Run as a subprocess (like the worker) so both get a process of their own:
`python -m bench.bare_client --bootstrap B --source T --target T2 --group G --count N
[--fanout K [--batched]]`. With `--fanout K` each event read is written K times (one
record per `send()`, as many records as the journey's event makes), the I/O shape of the
engine without any of its work. `--batched` writes them as the engine does instead: each
poll's records grouped per partition into whole batches (`engine/streaming/produce.py`), the
cheapest way this client has to write them. Prints one JSON line: records, seconds from
the first record read to the last commit, and the process's CPU seconds in that time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from engine.streaming.produce import produce_batched


async def consume_parse_produce(
    bootstrap: str,
    source: str,
    target: str,
    group: str,
    count: int,
    timeout: float,
    fanout: int = 1,
    batched: bool = False,
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
    hashes: dict[bytes, int] = {}
    done = 0
    first: float | None = None
    cpu_first = 0.0
    deadline = time.monotonic() + timeout
    try:
        while done < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            if first is None:
                first, cpu_first = time.monotonic(), time.process_time()
            futures = []
            queued: list[tuple[str, bytes | None, bytes | None]] = []
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
                        if batched:
                            queued.append((target, record.key, out))
                        else:
                            futures.append(await producer.send(target, out, key=record.key))
                    done += 1
            if queued:
                futures += await produce_batched(producer, queued, hashes=hashes)
            await asyncio.gather(*futures)
            await consumer.commit()
        last, cpu_last = time.monotonic(), time.process_time()
    finally:
        await consumer.stop()
        await producer.stop()
    seconds = last - first if first is not None else 0.0
    return {
        "records": done,
        "seconds": seconds,
        "per_second": done / seconds if seconds else 0.0,
        "cpu_seconds": cpu_last - cpu_first,
        "cpu_per_event_ms": (cpu_last - cpu_first) / done * 1000 if done else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--fanout", type=int, default=1, help="records written per event")
    parser.add_argument(
        "--batched", action="store_true", help="write them in whole batches, as the engine does"
    )
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
            args.batched,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
