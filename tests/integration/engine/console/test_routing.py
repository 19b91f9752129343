"""Two engine workers share the profiles' partitions: either one answers a profile lookup
(faust's table routing forwards it to the owner) and counts every worker's live instances.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.engine.console.conftest import (
    ConsoleStack,
    attributes,
    deploy_journeys,
    free_port,
    start_worker,
    stop_worker,
    wait_for,
    wait_ready,
)
from tests.support.builders import profile_event
from tests.support.kafka import Stack

pytestmark = pytest.mark.integration

PROFILES = [f"p-{i}" for i in range(12)]


async def test_either_worker_answers_for_every_profile(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, unique)
    await deploy_journeys(stack)
    workers = []
    for i in range(2):
        port = free_port()
        env = {
            **stack.env,
            "WORKER_WEB_PORT": str(port),
            "DATA_DIR": str(tmp_path / f"data-{i}"),
            "PYTHONUNBUFFERED": "1",
        }
        log = tmp_path / f"worker-{i}.log"
        proc = start_worker(env, log, role="engine")
        workers.append((proc, ConsoleStack(stack, f"http://127.0.0.1:{port}", env, log)))
    try:
        for proc, running in workers:
            await wait_ready(running.url, proc, running)
        first = workers[0][1]
        await first.publish(
            *(
                profile_event(f"e-{p}", "cart.abandoned", p, attributes=attributes(p))
                for p in PROFILES
            )
        )
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:

            async def local_counts() -> list[int]:
                counts = []
                for _, running in workers:
                    rows = (await client.get(running.url + "/api/live")).json()["live"]
                    counts.append(sum(r["count"] for r in rows if r["journey_id"] == "cart"))
                return counts

            async def split_and_answered() -> bool:
                counts = await local_counts()
                if sum(counts) != len(PROFILES) or 0 in counts:
                    return False  # not every profile processed, or one worker owns them all
                for _, running in workers:
                    for p in PROFILES:
                        answer = await client.get(f"{running.url}/api/profiles/{p}")
                        if answer.status_code != 200 or answer.json()["profile_id"] != p:
                            return False
                return True

            await wait_for(split_and_answered, "both workers owning profiles and answering all", 90)
            for _, running in workers:
                journeys = (await client.get(running.url + "/api/journeys")).json()["journeys"]
                [cart] = [j for j in journeys if j["journey_id"] == "cart"]
                assert cart["live"] == len(PROFILES)
                assert (await client.get(f"{running.url}/api/profiles/nobody")).status_code == 404
    finally:
        for proc, running in workers:
            stop_worker(proc)
            print(f"--- {running.log_path.name} ---\n{running.log()}")
