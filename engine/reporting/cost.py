"""What the messages cost: billable messages by category per journey, priced when a price
table is given (`journeyctl report --prices FILE`).

A message counts once, from its first DeliveryEvent that carries Meta's `pricing` (sent or
delivered) with `billable: true`. The price table is YAML:

    currency: EUR
    prices:
      marketing: {"34": 0.0509, "*": 0.06}   # country calling code -> price per message
      utility: {"34": 0.0166}

The longest calling-code prefix that matches the recipient's wins, then "*"; a billable
message with no price is counted as unpriced, never as free.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
import yaml
from rich.console import Console
from rich.table import Table

_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


class PriceFileError(ValueError):
    """The price table is unreadable or malformed; the message names the file and entry."""


@dataclass(frozen=True, slots=True)
class Prices:
    currency: str
    by_category: dict[str, dict[str, Decimal]]

    def price(self, category: str, country_code: str | None) -> Decimal | None:
        table = self.by_category.get(category)
        if not table:
            return None
        code = country_code or ""
        for length in range(len(code), 0, -1):
            found = table.get(code[:length])
            if found is not None:
                return found
        return table.get("*")


def load_prices(path: str | Path) -> Prices:
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceFileError(f"{file}: cannot read price file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PriceFileError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("prices"), dict):
        raise PriceFileError(f"{file}: expected a mapping with 'prices: {{category: {{...}}}}'")
    table: dict[str, dict[str, Decimal]] = {}
    for category, prefixes in raw["prices"].items():
        if not isinstance(prefixes, dict):
            raise PriceFileError(f"{file}: prices.{category}: expected prefix -> price")
        table[str(category)] = {}
        for prefix, value in prefixes.items():
            key = str(prefix)
            if key != "*" and not key.isdigit():
                raise PriceFileError(
                    f"{file}: prices.{category}.{key}: a calling code (digits) or '*'"
                )
            try:
                price = Decimal(str(value))
            except InvalidOperation:
                raise PriceFileError(
                    f"{file}: prices.{category}.{key}: {value!r} is not a number"
                ) from None
            if price < 0:
                raise PriceFileError(f"{file}: prices.{category}.{key}: negative price")
            table[str(category)][key] = price
    return Prices(currency=str(raw.get("currency", "")), by_category=table)


@dataclass(slots=True)
class JourneyCost:
    billable: Counter[str] = field(default_factory=Counter)
    free: Counter[str] = field(default_factory=Counter)
    cost: dict[str, Decimal] = field(default_factory=dict)
    unpriced: Counter[str] = field(default_factory=Counter)


class CostBuilder:
    """Folds delivery-events records into billable counts (and cost) per journey."""

    def __init__(self, prices: Prices | None = None, journeys: Any = None) -> None:
        self.prices = prices
        self._only = frozenset(journeys) if journeys else None
        self.journeys: dict[str, JourneyCost] = {}
        self._priced: set[str] = set()

    def add_delivery(self, raw: bytes) -> None:
        if b'"pricing"' not in raw:
            return
        try:
            record = orjson.loads(raw)
            pricing = record.get("pricing")
            if not pricing or record["message_id"] in self._priced:
                return
            if self._only is not None and record["journey_id"] not in self._only:
                return
            self._priced.add(record["message_id"])
            category = str(pricing["category"])
            journey = self.journeys.setdefault(str(record["journey_id"]), JourneyCost())
        except _UNREADABLE:
            return
        if not pricing.get("billable"):
            journey.free[category] += 1
            return
        journey.billable[category] += 1
        if self.prices is None:
            return
        price = self.prices.price(category, record.get("country_code"))
        if price is None:
            journey.unpriced[category] += 1
        else:
            journey.cost[category] = journey.cost.get(category, Decimal(0)) + price

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for journey_id, cost in sorted(self.journeys.items()):
            entry: dict[str, Any] = {
                "billable": dict(cost.billable),
                "free": dict(cost.free),
            }
            if self.prices is not None:
                entry["cost"] = {k: str(v) for k, v in sorted(cost.cost.items())}
                entry["total"] = str(sum(cost.cost.values(), Decimal(0)))
                entry["unpriced"] = dict(cost.unpriced)
                entry["currency"] = self.prices.currency
            out[journey_id] = entry
        return out


def render_cost(builder: CostBuilder, console: Console) -> None:
    """A table: journey, category, billable, free, and cost when priced."""
    if not builder.journeys:
        console.print("No priced messages (status webhooks without pricing).")
        return
    priced = builder.prices is not None
    currency = builder.prices.currency if builder.prices is not None else ""
    table = Table(title="Billable messages" + (f" and cost ({currency})" if priced else ""))
    for column in ("journey", "category", "billable", "free"):
        table.add_column(column, justify="right" if column in ("billable", "free") else "left")
    if priced:
        table.add_column("cost", justify="right")
        table.add_column("unpriced", justify="right")
    for journey_id, cost in sorted(builder.journeys.items()):
        for category in sorted(set(cost.billable) | set(cost.free)):
            row = [journey_id, category, str(cost.billable[category]), str(cost.free[category])]
            if priced:
                row += [str(cost.cost.get(category, Decimal(0))), str(cost.unpriced[category])]
            table.add_row(*row)
    console.print(table)
