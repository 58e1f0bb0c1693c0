"""Configuration files: the one YAML reader both processes use, and the models of the desk's files (fees.yaml,
tax_rules.yaml, markets.yaml and inventory.yaml).

Plain pydantic (no dagster) so that both processes can validate with the same rules. A pipelines loader validates a
file with `sofia_pipelines.validation.validated`, which names the file and every bad field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# Maker and taker rates are fractions of notional; a rebate is a small negative fee.
MIN_FEE_RATE, MAX_FEE_RATE = -0.01, 0.05
MARKET_KINDS = ("spot", "perp")
TAX_KINDS = ("corporate_income_tax", "corporate_income_tax_financial", "minimum_tax", "transaction_tax",
             "withholding")
TAX_STATUSES = ("enacted", "proposed")


def _not_a_number(value):
    # pydantic reads a number as a Unix time; in these files a bare number where a date belongs is a mistake
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("should be a date YYYY-MM-DD, not a number")
    return value


Day = Annotated[date, BeforeValidator(_not_a_number)]
Rate = Annotated[float, Field(ge=MIN_FEE_RATE, le=MAX_FEE_RATE)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Name = Annotated[str, Field(min_length=1)]


class ConfigFileError(ValueError):
    """A configuration file that cannot be read as YAML, or is not the mapping it should be; names the file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys: a setting given twice is refused instead, not guessed."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"setting {key!r} given twice",
                                                        key_node.start_mark)
            seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path):
    """The YAML document of a configuration file (None when empty); ConfigFileError naming the file when it cannot
    be read, is not UTF-8, is not valid YAML (a setting given twice included) or is nested too deeply."""
    try:
        return yaml.load(path.read_bytes().decode("utf-8-sig"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigFileError(f"{path}: not valid YAML: nested too deeply") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Dated(_Strict):
    valid_from: Day
    valid_to: Day | None = None

    @model_validator(mode="after")
    def _ends_after_start(self):
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError(f"valid_to ({self.valid_to}) must be after valid_from ({self.valid_from})")
        return self


# --- fees.yaml ------------------------------------------------------------------------------------------------
class MakerTaker(_Strict):
    maker: Rate
    taker: Rate


class FeeTier(MakerTaker):
    tier: Name
    min_volume_30d_usd: NonNegative


class TradingFees(_Dated):
    venue: Name
    market: Literal[MARKET_KINDS]
    source: Name
    funding_interval_hours: Positive | None = None
    tiers: list[FeeTier] = Field(min_length=1)

    @field_validator("tiers")
    @classmethod
    def _tiers_cover_every_volume(cls, tiers: list[FeeTier]) -> list[FeeTier]:
        names = [t.tier for t in tiers]
        if len(set(names)) < len(names):
            raise ValueError(f"tier names repeat: {names}")
        floors = [t.min_volume_30d_usd for t in tiers]
        if len(set(floors)) < len(floors):
            raise ValueError(f"two tiers start at the same min_volume_30d_usd: {floors}")
        if min(floors) != 0:
            raise ValueError(f"no tier starts at min_volume_30d_usd 0 (lowest {min(floors)}), so a smaller volume "
                             "reaches none")
        return tiers


class WithdrawalFee(_Strict):
    venue: Name
    asset: Name
    network: Name
    fee: NonNegative
    source: Name
    valid_from: Day | None = None  # the file's `checked` date when absent
    valid_to: Day | None = None


def trading_periods(trading: Sequence[Mapping]) -> dict[tuple[str, str], list[dict]]:
    """The trading fee periods per (venue, market), in time order. A period without `valid_to` ends where the next
    one starts; periods that overlap are a ValueError naming them."""
    periods: dict[tuple[str, str], list[dict]] = {}
    for o in trading:
        periods.setdefault((o["venue"], o["market"]), []).append(dict(o))
    for (venue, market), rows in periods.items():
        rows.sort(key=lambda o: o["valid_from"])
        for prev, nxt in zip(rows, rows[1:]):
            if prev.get("valid_to") is None:
                prev["valid_to"] = nxt["valid_from"]
            if prev["valid_to"] > nxt["valid_from"] or prev["valid_from"] == nxt["valid_from"]:
                raise ValueError(f"trading fees for {venue} {market} overlap: the period from {prev['valid_from']} "
                                 f"runs to {prev['valid_to']}, the next starts {nxt['valid_from']}")
    return periods


def _repeated(keys: Sequence[tuple]) -> list[tuple]:
    return sorted((k for k, n in Counter(keys).items() if n > 1), key=str)


class FeesFile(_Strict):
    desk_volume_30d_usd: NonNegative
    checked: Day
    trading: list[TradingFees]
    withdrawals: list[WithdrawalFee] = []
    default: MakerTaker | None = None

    @field_validator("trading")
    @classmethod
    def _no_overlap(cls, trading: list[TradingFees]) -> list[TradingFees]:
        trading_periods([t.model_dump() for t in trading])
        return trading

    @field_validator("withdrawals")
    @classmethod
    def _one_fee_per_network(cls, withdrawals: list[WithdrawalFee]) -> list[WithdrawalFee]:
        twice = _repeated([(w.venue, w.asset, w.network, w.valid_from) for w in withdrawals])
        if twice:
            raise ValueError(f"more than one fee for {[' '.join(map(str, k[:3])) for k in twice]}")
        return withdrawals


# --- tax_rules.yaml -------------------------------------------------------------------------------------------
class ProposedRules(_Strict):
    enabled: bool = False
    start: Day | None = None

    @model_validator(mode="after")
    def _start_when_enabled(self):
        if self.enabled and self.start is None:
            raise ValueError("enabled needs a start date")
        return self


class TaxRule(_Dated):
    rule_id: Name
    kind: Literal[TAX_KINDS]
    rate: Annotated[float, Field(ge=0, le=1)]
    status: Literal[TAX_STATUSES]
    source: str = ""


class TaxRulesFile(_Strict):
    proposed_rules: ProposedRules = ProposedRules()
    rules: list[TaxRule]

    @field_validator("rules")
    @classmethod
    def _one_rule_per_start(cls, rules: list[TaxRule]) -> list[TaxRule]:
        twice = _repeated([(r.rule_id, r.valid_from) for r in rules])
        if twice:
            raise ValueError(f"rule_id and valid_from repeat: {[f'{r} from {d}' for r, d in twice]}")
        return rules


# --- markets.yaml ---------------------------------------------------------------------------------------------
class MarketSpec(_Strict):
    venue: Name
    symbol: Name
    market: Literal[MARKET_KINDS]
    base: Name
    quote: Name
    price_tick: Positive
    amount_step: Positive
    min_amount: NonNegative
    min_notional: NonNegative | None = None
    source: str | None = None


class MarketsFile(_Strict):
    markets: list[MarketSpec]

    @field_validator("markets")
    @classmethod
    def _one_row_per_market(cls, markets: list[MarketSpec]) -> list[MarketSpec]:
        twice = _repeated([(m.venue, m.symbol) for m in markets])
        if twice:
            raise ValueError(f"more than one row for {[' '.join(k) for k in twice]}")
        return markets


# --- inventory.yaml -------------------------------------------------------------------------------------------
class InventoryFile(_Strict):
    # every target is a share of a non-negative total; its band is target * (1 -/+ tolerance), so a tolerance
    # within [0, 1] keeps 0 <= lower <= target <= upper
    min_share: float = Field(ge=0, le=1)
    tolerance: float = Field(ge=0, le=1)
    balances: dict[Name, dict[Name, NonNegative]]


CONFIG_FILES: dict[str, type[BaseModel]] = {"fees.yaml": FeesFile, "tax_rules.yaml": TaxRulesFile,
                                            "markets.yaml": MarketsFile, "inventory.yaml": InventoryFile}
