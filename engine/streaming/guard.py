"""The version guard of engine/streaming: importing it raises UnsupportedVersionError when
the installed faust-streaming or aiokafka is not a version whose private internals the
package's workarounds were checked against.

Every module that reaches into those internals imports it first: internals.py (faust),
clients.py (aiokafka), consumer.py (the consumer fixes) and drain.py (the fetch loop copy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import version

# The versions whose private internals the workarounds were read against. Another version:
# check drain.py against its `Consumer._drain_messages`, consumer.py against its
# consumer, recovery and fetcher, and internals.py and clients.py, then add it here.
WRITTEN_AGAINST: Mapping[str, frozenset[str]] = {
    "faust-streaming": frozenset({"0.15.3"}),
    "aiokafka": frozenset({"0.14.0"}),
}


class UnsupportedVersionError(ImportError):
    """An installed faust-streaming or aiokafka these workarounds were not checked against."""


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Raise UnsupportedVersionError unless every package of WRITTEN_AGAINST is a listed version."""
    wrong = {
        name: installed(name)
        for name, known in WRITTEN_AGAINST.items()
        if installed(name) not in known
    }
    if wrong:
        found = ", ".join(f"{name} {got}" for name, got in sorted(wrong.items()))
        expected = ", ".join(
            f"{name} {' or '.join(sorted(known))}"
            for name, known in sorted(WRITTEN_AGAINST.items())
        )
        raise UnsupportedVersionError(
            f"installed {found}; engine/streaming reaches into private internals checked "
            f"only against {expected}. Install those (requirements.lock), or check "
            "engine/streaming/drain.py, consumer.py and internals.py against the new "
            "version and add it to guard.WRITTEN_AGAINST."
        )


check_versions()
