"""Value types shared by every boundary model: durations, phones, time zones, CEL.

Each type validates once at the edge so the engine never sees a bad value.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any, TypeVar, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import cel
import orjson
import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

_M = TypeVar("_M", bound=BaseModel)
_set = object.__setattr__


def construct(cls: type[_M], /, **values: Any) -> _M:
    """`cls.model_construct(**values)` for trusted values that name every field.

    pydantic's model_construct walks every field in Python to fill in defaults; the
    interpreter builds a dozen models per event, all with every field given, so this
    skips the walk. Values that leave a field out go to model_construct, defaults and all.
    """
    if values.keys() != cls.__pydantic_fields__.keys():
        return cls.model_construct(**values)
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def json_bytes(model: BaseModel) -> bytes:
    """The model's JSON as bytes: what `orjson.dumps(model.model_dump(mode="json"))` gives,
    from pydantic's serializer in one step (no dict in between, no str to encode)."""
    return model.__pydantic_serializer__.to_json(model)


def _fields_of(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"{type(value).__name__} is not a record field")


def record_json(record: BaseModel) -> bytes:
    """`json_bytes(record)` for the records the engine and connectors write per event
    (SendRequest, DeliveryEvent, JourneyStepEvent and the models nested in them): orjson
    over the fields, a fifth of pydantic's cost. Equal byte for byte only for models
    without aliases, custom serializers or computed fields, whose values orjson writes as
    pydantic does (tests/unit/schemas/test_record_json.py holds the record models to it).
    A value orjson cannot write goes through pydantic's serializer instead."""
    try:
        return orjson.dumps(record.__dict__, default=_fields_of, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        return json_bytes(record)


class StrictModel(BaseModel):
    """Base of every boundary model: unknown fields are an error, not a surprise."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


# --- durations -------------------------------------------------------------------

_DURATION_RE = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = r"^\d+(s|m|h|d)$"


def parse_duration(value: Any) -> timedelta:
    """Parse `30s`, `15m`, `1h`, `7d` (also a timedelta or seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a string like 30s, 15m, 1h or 7d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value.strip())
        if match:
            return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    raise ValueError(
        f"invalid duration {value!r}: use a whole number and a unit, like 30s, 15m, 1h or 7d"
    )


def format_duration(value: timedelta) -> str:
    """The shortest exact `Ns|Nm|Nh|Nd` spelling of a duration."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("a duration must be greater than zero")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "1h", "7d"]}
    ),
]

# --- phones and time zones -------------------------------------------------------


def normalize_e164(value: str) -> str:
    """Return the E.164 form of a phone number, or raise ValueError saying why not."""
    if not isinstance(value, str) or not value.startswith("+"):
        raise ValueError("phone numbers must be in E.164 form: '+' then country code and number")
    return _normalize_e164(value)


# A request's number is checked when it is parsed and again by the send policy; a number
# seen before is answered from the cache (phonenumbers is slow), with the same result.
@lru_cache(maxsize=65_536)
def _normalize_e164(value: str) -> str:
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number in E.164 form: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number for its country code")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# Anything shaped like a phone number in free text: 7 to 15 digits, with or without '+',
# standing alone: digits inside an identifier (a topic's suffix, a hex id) are not a number.
_PHONE_LIKE = re.compile(r"(?<![A-Za-z0-9_.\-])\+?\d{7,15}(?![A-Za-z0-9_])")
_NOT_DIGIT = re.compile(r"\D")


def mask_phone(phone: str | None) -> str:
    """The one form of a phone number fit for logs, the CLI and the console.

    '+34 600 111 222' -> '+34******222': the country prefix and the last three digits
    stay, so numbers can be told apart but not dialled; separators are dropped first, so
    the form does not depend on how the number was written. A number of 5 digits or fewer
    keeps none of them; None or no digits gives '-'.
    """
    digits = _NOT_DIGIT.sub("", phone or "")
    if not digits:
        return "-"
    if len(digits) <= 5:
        return "+" + "*" * len(digits)
    return "+" + digits[:2] + "*" * (len(digits) - 5) + digits[-3:]


@overload
def mask_phones_in(text: str) -> str: ...
@overload
def mask_phones_in(text: None) -> None: ...
def mask_phones_in(text: str | None) -> str | None:
    """Free text with every run of 7 to 15 digits, with or without '+', masked by
    `mask_phone`: a bare WhatsApp id ('34600111222') is a phone number too. A run that is
    part of a longer word ('journey-definitions-bf5712345874') is left alone."""
    return None if text is None else _PHONE_LIKE.sub(lambda m: mask_phone(m.group()), text)


def is_e164(value: object) -> bool:
    try:
        normalize_e164(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


E164Phone = Annotated[
    str,
    AfterValidator(normalize_e164),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\+[1-9]\d{6,14}$", "examples": ["+34600111222"]}
    ),
]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(value: str) -> str:
    """Accept only IANA zone names (Europe/Madrid, UTC), never offsets or abbreviations."""
    if value not in _zones():
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Madrid")
    try:
        ZoneInfo(value)
    except ZoneInfoNotFoundError:
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZoneName = Annotated[
    str,
    AfterValidator(check_timezone),
    WithJsonSchema({"type": "string", "examples": ["Europe/Madrid", "UTC"]}),
]

# --- CEL expressions ---------------------------------------------------------------


MAX_EXPRESSION_CHARS = (
    4096  # the binding evaluates on the thread's stack: ~13,000 operators overflow it
)


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Any:
    """Compile a CEL expression once per distinct source text; raise ValueError on syntax errors."""
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ValueError(
            f"CEL expression of {len(source)} characters; the limit is {MAX_EXPRESSION_CHARS}: "
            "split it across condition branches"
        )
    try:
        program = cel.compile(source)
    except Exception as exc:  # the binding raises ValueError today; be robust to others
        raise ValueError(f"invalid CEL expression {source!r}: {_cel_reason(str(exc))}") from None
    depth = macro_depth(source)
    if depth > MAX_MACRO_DEPTH:
        raise ValueError(
            f"CEL expression nests {depth} comprehensions (all, exists, exists_one, map, "
            f"filter); the limit is {MAX_MACRO_DEPTH}: each level multiplies the work"
        )
    return program


# Three nested comprehensions over 300-item lists run for seconds on the worker's event loop.
MAX_MACRO_DEPTH = 2
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_STRING = (
    r"[rRbB]{0,2}(?:'''[\s\S]*?'''"
    r'|"""[\s\S]*?"""'
    r"|'(?:\\.|[^'\\\n])*'"
    r'|"(?:\\.|[^"\\\n])*")'
)
_TOKEN = re.compile(
    rf"(?P<string>{_STRING})"
    r"|(?P<macro>\.\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\()"
    r"|(?P<open>\()|(?P<close>\))"
)


def macro_depth(source: str) -> int:
    """How deeply comprehension macros (`.all(...)`, `.map(...)`, ...) nest in `source`.

    A scan of tokens (strings skipped, parentheses matched), run after the expression
    compiled, so the text is valid CEL.
    """
    stack: list[bool] = []  # one entry per open parenthesis: is it a macro's?
    depth = deepest = 0
    for match in _TOKEN.finditer(source):
        if match.group("string") is not None:
            continue
        if match.group("macro") is not None:
            is_macro = match.group("name") in _MACROS
            stack.append(is_macro)
            depth += is_macro
            deepest = max(deepest, depth)
        elif match.group("open") is not None:
            stack.append(False)
        elif stack:
            depth -= stack.pop()
    return deepest


def _cel_reason(text: str) -> str:
    # The binding's message repeats the source and draws a caret; keep the one useful line.
    match = re.search(r"<input>:(\d+):(\d+): (.*)", text)
    if match:
        return f"{match.group(3).strip()} (at column {match.group(2)})"
    return text.splitlines()[0] if text else "cannot compile"


def _check_expression(value: str) -> str:
    if not value.strip():
        raise ValueError("an expression cannot be empty")
    compile_expression(value)
    return value


Expression = Annotated[
    str,
    AfterValidator(_check_expression),
    WithJsonSchema(
        {
            "type": "string",
            "description": "a CEL expression",
            "examples": ['profile.language == "es"'],
        }
    ),
]

IDENT_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
JourneyId = Annotated[str, Field(pattern=IDENT_PATTERN, min_length=1, max_length=100)]
ActivityId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", min_length=1, max_length=100)
]
EventType = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length=1, max_length=100)
]
