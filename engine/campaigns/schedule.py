"""When schedules fire: one-off and daily/weekly/monthly occurrences in a time zone, and run ids.

Pure: every function takes the clock as an argument.

Choices where the contract is silent:
- A recurring time that a daylight-saving jump skips (02:30 on the last Sunday of March in
  Madrid) fires at the same distance after the jump (03:30 local); a time that happens twice
  (02:30 on the last Sunday of October) fires once, the first time.
- A monthly day past the end of a month is that month's last day (31 -> 30 April, 28 or
  29 February); two days that fall on the same date fire once.
- A scheduled run is started only if its time came after the version was deployed and less
  than the catch-up window ago, so a worker that was down briefly still sends, and a
  campaign deployed at 10:00 with a daily 09:00 starts tomorrow.
- The run id of an occurrence is its UTC time, `20261127T0800Z`; the run of a schedule
  `now` (or of an audience journey without a schedule) is `now` for a campaign, for every
  version (changing a sent campaign does not send it again), and `v<version>` for a journey
  (a new version reads its audience again; re-entry rules decide who enters).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from engine.core.catalog import CompiledJourney
from schemas.schedule import WEEKDAYS, Schedule

_HORIZON_DAYS = 400  # more than a year: every schedule has an occurrence in any such span


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    run_id: str
    requested_at: datetime


def run_id_at(when: datetime) -> str:
    """The run id of a scheduled occurrence: its UTC minute."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%MZ")


def one_off_time(schedule: Schedule) -> datetime:
    """The instant of a one-off `at` (local time in the schedule's zone when it has no offset)."""
    moment = datetime.fromisoformat(schedule.at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(schedule.timezone))
    return moment.astimezone(UTC)


def next_occurrence(schedule: Schedule, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`, or None (a past one-off, or `now`)."""
    if schedule.on_deploy:
        return None
    if schedule.every is None:
        once = one_off_time(schedule)
        return once if once > after else None
    zone = ZoneInfo(schedule.timezone)
    start = after.astimezone(zone).date() - timedelta(days=1)
    for day in _days(start, 1):
        moment = _occurrence(schedule, day, zone)
        if moment is not None and moment > after:
            return moment
    return None


def latest_occurrence(schedule: Schedule, now: datetime) -> datetime | None:
    """The last occurrence at or before `now`, or None (a future one-off, or `now`)."""
    if schedule.on_deploy:
        return None
    if schedule.every is None:
        once = one_off_time(schedule)
        return once if once <= now else None
    zone = ZoneInfo(schedule.timezone)
    start = now.astimezone(zone).date() + timedelta(days=1)
    for day in _days(start, -1):
        moment = _occurrence(schedule, day, zone)
        if moment is not None and moment <= now:
            return moment
    return None


def schedule_of(compiled: CompiledJourney) -> Schedule | None:
    """The schedule of a campaign, or of a journey's audience entry."""
    if compiled.campaign is not None:
        return compiled.campaign.schedule
    audience = compiled.definition.entry.audience
    return audience.schedule if audience is not None else None


def due_run(compiled: CompiledJourney, now: datetime, catch_up: timedelta) -> ScheduledRun | None:
    """The run the schedule says should exist now, or None (see the module docstring)."""
    if compiled.definition.entry.audience is None:
        return None
    schedule = schedule_of(compiled)
    if schedule is None and compiled.is_campaign:
        return None  # sent only when triggered
    if schedule is None or schedule.on_deploy:
        run_id = "now" if compiled.is_campaign else f"v{compiled.version}"
        return ScheduledRun(run_id, compiled.deployed_at)
    moment = latest_occurrence(schedule, now)
    if moment is None or moment < compiled.deployed_at or now - moment > catch_up:
        return None
    return ScheduledRun(run_id_at(moment), moment)


def describe(schedule: Schedule | None) -> str:
    """A schedule in a few words, for listings."""
    if schedule is None:
        return "when triggered"
    if schedule.on_deploy:
        return "on deploy"
    if schedule.every is None:
        return f"at {one_off_time(schedule).isoformat()}"
    days = "" if schedule.every == "day" else f" on {','.join(map(str, schedule.days))}"
    return f"every {schedule.every}{days} at {schedule.at} {schedule.timezone}"


def _days(start: date, step: int) -> Iterator[date]:
    for offset in range(_HORIZON_DAYS):
        yield start + timedelta(days=offset * step)


def _occurrence(schedule: Schedule, day: date, zone: ZoneInfo) -> datetime | None:
    if not _fires_on(schedule, day):
        return None
    hours, minutes = schedule.at.split(":")
    # fold=0: a repeated local time means its first instance; a skipped one maps past the gap.
    local = datetime.combine(day, time(int(hours), int(minutes)), tzinfo=zone)
    return local.astimezone(UTC)


def _fires_on(schedule: Schedule, day: date) -> bool:
    if schedule.every == "day":
        return True
    if schedule.every == "week":
        return WEEKDAYS[day.weekday()] in schedule.days
    last = calendar.monthrange(day.year, day.month)[1]
    wanted = {last if d == "last" else min(int(d), last) for d in schedule.days}
    return day.day in wanted
