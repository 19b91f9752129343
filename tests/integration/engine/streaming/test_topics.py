"""engine.streaming.topics: ensure_topics returns only once its topics can be used."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from engine.streaming.topics import TopicSpec, ensure_topics, wait_visible
from schemas.settings import Settings

pytestmark = pytest.mark.integration


async def test_created_topics_are_described_with_leaders_at_once(
    kafka_bootstrap: str, unique: str
) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    names = [f"visible-{n}-{unique}" for n in range(6)]
    created = await ensure_topics(settings, [TopicSpec(name, 4) for name in names])
    assert sorted(created) == sorted(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    assert {d["topic"]: (d["error_code"], len(d["partitions"])) for d in described} == {
        name: (0, 4) for name in names
    }
    assert all(p["leader"] >= 0 for d in described for p in d["partitions"])


async def test_a_topic_that_never_appears_is_named_after_the_wait(
    kafka_bootstrap: str, unique: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        with pytest.raises(RuntimeError, match=f"never-created-{unique}"):
            await wait_visible(admin, [f"never-created-{unique}"], 0.3)
    finally:
        await admin.close()
