"""Summaries of py-spy's raw (folded) stacks: where a worker's samples went.

`python -m bench.profile_report FILE [--top N] [--focus TEXT]` prints the functions with
the most samples, inclusive (anywhere on the stack) and self (the innermost frame).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")
_LOCATION = re.compile(r" \([^;]*?\)")
_IDLE = ("select (selectors.py)", "epoll_wait", "_run_once (asyncio/base_events.py)")


@dataclass(frozen=True, slots=True)
class Summary:
    samples: int
    idle: int
    inclusive: list[tuple[str, int]]
    self_time: list[tuple[str, int]]


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group('func')} ({path})" if path else match.group("func")


def summarize(path: Path, top: int = 25, focus: str | None = None) -> Summary:
    """Top functions by samples; `focus` keeps only stacks that pass through a frame
    whose name contains it (e.g. '_process_record')."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        if focus is not None and not any(focus in f for f in frames):
            continue
        total += count
        innermost = frames[-1]
        if any(innermost.startswith(i) for i in _IDLE) or "epoll_wait" in innermost:
            idle += count
        self_time[innermost] += count
        # Each frame once per stack, in stack order: ties then keep a fixed order.
        for name in dict.fromkeys(frames):
            inclusive[name] += count
    return Summary(total, idle, inclusive.most_common(top), self_time.most_common(top))


# Where a worker's samples go, first match wins (a sample belongs to one category).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting (event loop idle)", ("epoll_wait", "select_epoll_poll", "pthread_cond_timedwait")),
    ("consumer thread (fetching)", ("WorkerThread.run",)),
    ("interpreter and decoding (_process_record)", ("EngineRuntime._process_record",)),
    ("producing effects (flush: Topic.send)", ("EngineRuntime.flush;Topic.send",)),
    ("serializing states (flush step 1)", ("_flush_locked.<locals>.<listcomp>;state_record",)),
    ("rest of flush (table writes, acks)", ("EngineRuntime.flush",)),
    ("timer ticks (_fire_timers)", ("EngineRuntime._fire_timers",)),
    # The WhatsApp connector's worker.
    ("Cloud API call (CloudApiClient.send)", ("CloudApiClient.send",)),
    ("table and changelog writes (_store)", ("WhatsAppConnector._store", "._write_changelog")),
    ("delivery events (_emit)", ("WhatsAppConnector._emit",)),
    ("request parsing (_parse)", ("WhatsAppConnector._parse",)),
    ("rest of a request (handle: table, policy)", ("WhatsAppConnector.handle",)),
    ("batch handling and acks (_run_batch)", ("WhatsAppConnector._run_batch",)),
    ("Kafka record writes (RecordWriter)", ("RecordWriter.",)),
    # aiohttp's side of a Cloud API call that runs outside it: its socket callbacks.
    ("HTTP responses and request bodies (aiohttp)", ("ResponseHandler.", "ClientRequest.")),
    # Both workers: records on their way from the consumer to the agent.
    ("faust delivery (fetch loop, stream iteration)", ("drain_messages", "Stream.events")),
    ("aiokafka sender (produce requests)", ("Sender.",)),
    ("logging", ("Logger.",)),
    ("garbage collector", ("gc_collect",)),
)


# A frame every thread but the main one starts from (threading.Thread's entry).
_SIDE_THREAD = "Thread._bootstrap"


def categories(path: Path, main_thread: bool = False) -> list[tuple[str, float]]:
    """Share of samples per category of CATEGORIES (and 'other').

    A category matches when any of its needles is in the stack. `main_thread`
    counts only the main thread's samples, the event loop that carries a worker's work:
    the consumer thread's waits would otherwise show as the worker's idle time."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        functions = _LOCATION.sub("", stack)  # "f (file.py:12);g (x.py:3)" -> "f;g"
        if main_thread and _SIDE_THREAD in functions:
            continue
        count = int(count_text)
        total += count
        for name, needles in CATEGORIES:
            if any(n in functions for n in needles):
                counts[name] += count
                break
        else:
            counts["other (faust and asyncio machinery)"] += count
    return [(name, 100 * n / max(total, 1)) for name, n in counts.most_common()]


def render(summary: Summary) -> str:
    lines = [f"samples: {summary.samples}, idle (waiting in the event loop): {summary.idle}"]
    total = max(summary.samples, 1)
    lines.append("\ninclusive (share of all samples):")
    for name, count in summary.inclusive:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines.append("\nself:")
    for name, count in summary.self_time:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--focus", default=None)
    args = parser.parse_args()
    sys.stdout.write(render(summarize(args.file, args.top, args.focus)) + "\n")


if __name__ == "__main__":
    main()
