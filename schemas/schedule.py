"""When an audience is read: `now` (on deploy), once `at` a time, or `every` day, week or month.

Shared by campaigns and by journeys that enter by audience; engine/campaigns/schedule.py computes the
occurrences (time zones and daylight-saving changes included).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from schemas.common import StrictModel, TimeZoneName

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_SHAPES = (
    "a schedule is `now`, {at: '2026-11-27T09:00', timezone: Europe/Madrid}, or "
    "{every: day|week|month, at: 'HH:MM', days: [...], timezone: ...}"
)


class Schedule(StrictModel):
    """`at: now`, a one-off `at` date-time, or a recurring `every` with a clock time `at`.

    A one-off `at` without an offset is local time in `timezone`; `days` are weekdays
    (`mon`..`sun`) for weekly schedules and days of the month (1-31, or `last`) for monthly
    ones. A day past the end of a month means the month's last day.
    """

    every: Literal["day", "week", "month"] | None = None
    at: str
    days: list[str | int] = Field(default_factory=list, max_length=31, validate_default=True)
    timezone: TimeZoneName = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value == "now":
            return {"at": "now"}
        if not isinstance(value, dict):
            raise ValueError(_SHAPES)
        return value

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: Any, info: ValidationInfo) -> str:
        every = info.data.get("every")
        if isinstance(value, datetime):  # YAML reads an unquoted date-time as a datetime
            value = value.isoformat()
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError("write the time quoted, like '09:30' (YAML reads 9:30 as a number)")
        if not isinstance(value, str):
            raise ValueError("a time is text: 'now', '2026-11-27T09:00' or, with every, '09:00'")
        if every is not None:
            if not _CLOCK_RE.match(value):
                raise ValueError(
                    f"invalid time {value!r}: a recurring schedule runs at a 24-hour HH:MM, like '09:00'"
                )
            return value
        if value == "now":
            return value
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"invalid date-time {value!r}: use ISO 8601, like '2026-11-27T09:00' "
                "(local time in `timezone`) or '2026-11-27T09:00:00+01:00'"
            ) from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str | int], info: ValidationInfo) -> list[str | int]:
        every = info.data.get("every")
        if every in (None, "day"):
            if value:
                what = "a daily schedule" if every == "day" else "a one-off schedule"
                raise ValueError(f"{what} takes no days")
            return value
        if not value:
            example = "[mon, thu]" if every == "week" else "[1, 15, last]"
            raise ValueError(f"a {every}ly schedule needs days, like {example}")
        for day in value:
            if every == "week" and day not in WEEKDAYS:
                raise ValueError(f"{day!r} is not a weekday: use mon, tue, wed, thu, fri, sat, sun")
            if every == "month" and day != "last" and not (isinstance(day, int) and 1 <= day <= 31):
                raise ValueError(f"{day!r} is not a day of the month: use 1 to 31, or last")
        if len(set(value)) != len(value):
            raise ValueError("days are listed twice")
        return value

    @property
    def on_deploy(self) -> bool:
        return self.every is None and self.at == "now"
