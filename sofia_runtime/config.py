"""The runtime's configuration: defaults < YAML file (`--config`, else `<data>/runtime.yaml` when present)
< environment (`SOFIA_RUNTIME_<FIELD>`, nested with `__`) < command-line flags. API keys are not part of it:
they come from `SOFIA_<VENUE>_API_KEY` / `SOFIA_<VENUE>_SECRET` only when trading live, and are never stored here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from sofia_runtime import paths
from sofia_runtime.config_files import ConfigFileError, read_yaml

STRATEGIES = ("mm_lite", "funding_farmer", "router")
_yaml_file: Path | None = None  # set only while load_config builds a RuntimeConfig


class _Section(BaseModel):
    # an infinite threshold or size is never meant (a gate threshold of -inf would pass every order)
    model_config = ConfigDict(allow_inf_nan=False)


class GateConfig(_Section):
    threshold_usd: float = Field(0.0, description="an order passes only when its EV in USD is above this")
    miss_cost_bps: float = Field(0.5, ge=0, description="cost of an order that does not fill, bps of notional")
    adverse_selection_bps: float = Field(1.0, ge=0, description="expected move against a maker fill, bps")
    horizon_s: float = Field(30.0, gt=0, description="how long a maker order is expected to rest")
    vol_window: int = Field(60, ge=2, description="book updates in the mid-volatility estimate")


class LimitsConfig(_Section):
    stale_after_s: float = Field(5.0, gt=0, description="no orders on a book older than this (market time)")
    cancel_stale_after_s: float = Field(60.0, gt=0, description="resting limit orders are cancelled when their book "
                                                                "is older than this (market time; live: wall time)")
    max_open_orders_total: int = Field(40, ge=1)


class MmLiteConfig(_Section):
    quote_usd: float = Field(2000.0, gt=0, description="size of each quote in USD")
    half_spread_ticks: int = Field(1, ge=0, description="quote this many ticks behind the touch")
    skew_bps_per_limit: float = Field(5.0, ge=0, description="quotes move this many bps at the position limit")
    requote_s: float = Field(30.0, gt=0, description="market seconds a quote rests before it is replaced")
    symbols: list[str] = Field(default_factory=list, description="empty = the active spot symbols of the session schedule")


class FundingFarmerConfig(_Section):
    notional_usd: float = Field(5000.0, gt=0)
    hold_hours: float | None = Field(None, gt=0, description="market hours a pair is held; default: "
                                                             "breakeven_multiple x the opportunity's break-even time")
    breakeven_multiple: float = Field(2.0, gt=1.0)
    reconsider_s: float = Field(900.0, gt=0, description="market seconds before an offer the gate refused is re-tried")
    max_pairs: int = Field(2, ge=1)


class RouterConfig(_Section):
    order: str | None = Field(None, description='parent order, e.g. "buy 0.5 BTC/USDT"')
    max_cost_bps: float = Field(15.0, gt=0, description="what the desk will pay to execute, bps of notional")
    child_usd: float = Field(5000.0, gt=0, description="largest child order in USD")


class BreakerConfig(_Section):
    """The runtime pauses itself (writes the pause control file) when its venue keeps failing, without waiting
    for the anomaly sensor. Stale market data does not pause: the stale-data limit blocks orders on that book."""
    max_consecutive_venue_errors: int = Field(5, ge=1, description="order/cancel calls failing in a row")


class ChaosConfig(_Section):
    """Faults injected between the engine and the exchange adapter (`sofia-runtime chaos` sets these)."""
    scenario: str = "custom"
    latency_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    timeout_rate: float = Field(0.0, ge=0, le=1, description="requests failing with a timeout before the venue")
    error_5xx_rate: float = Field(0.0, ge=0, le=1, description="requests answered 5xx, not processed")
    drop_after_send_rate: float = Field(0.0, ge=0, le=1, description="processed, then the connection drops")
    rate_limit_rate: float = Field(0.0, ge=0, le=1)
    stale_venue: str | None = Field(None, description="a venue whose market data stops for a while")
    stale_from_s: float = Field(0.0, ge=0, description="market seconds after the start the data stops")
    stale_for_s: float = Field(0.0, ge=0)
    seed: int = 0


class _YamlFile(YamlConfigSettingsSource):
    def _read_file(self, file_path: Path) -> dict:
        data = read_yaml(file_path)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigFileError(f"{file_path}: a YAML {type(data).__name__}, not a mapping of settings")
        return data


class RuntimeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOFIA_RUNTIME_", env_nested_delimiter="__", extra="forbid",
                                      allow_inf_nan=False)

    strategy: Literal["mm_lite", "funding_farmer", "router"] = "mm_lite"
    mode: Literal["paper", "live"] = "paper"
    allow_live: bool = False
    venue: str | None = Field(None, description="live: the ccxt exchange id; paper: restrict to one venue")
    runtime_id: str | None = Field(None, description="journal and lock name; default <strategy>-<mode>")
    port: int = Field(8000, ge=0, le=65535)
    bind: str = Field("127.0.0.1", min_length=1, description="address of the HTTP surface; loopback unless you mean "
                                                             "it (pause/resume/handover need the control token)")
    source: Literal["replay", "simulator"] = Field(
        "replay", description="paper market data: the snapshot's day replayed at `speed`, or the embedded simulator's "
                              "market for today followed in real time")
    speed: float = Field(60.0, ge=0, description="market seconds per wall second; 0 = as fast as possible")
    duration_s: float | None = Field(None, gt=0, description="stop after this much wall time")
    snapshot_max_age_h: float = Field(72.0, gt=0)
    pause_poll_s: float = Field(0.25, gt=0, le=1.0)
    send_retries: int = Field(3, ge=0, description="re-sends of an order after network errors (each after a lookup)")
    send_backoff_s: float = Field(0.05, ge=0)
    slot: Literal["blue", "green"] | None = Field(None, description="blue-green slot: trade only while holding "
                                                                    "the deployment's lease")
    deployment: str | None = Field(None, description="the blue-green pair's name; default: the strategy")
    starting_balances: dict[str, float] = Field(default_factory=dict,
                                                description="paper balances per asset; empty = inventory targets")
    breaker: BreakerConfig = BreakerConfig()
    chaos: ChaosConfig | None = None
    gate: GateConfig = GateConfig()
    limits: LimitsConfig = LimitsConfig()
    mm_lite: MmLiteConfig = MmLiteConfig()
    funding_farmer: FundingFarmerConfig = FundingFarmerConfig()
    router: RouterConfig = RouterConfig()
    market_data: Literal["auto", "websocket", "polling"] = Field(
        "auto", description="live: the venue's websocket stream (ccxt.pro) where ccxt has one, polling the REST order "
                            "book otherwise and while the stream is down (auto); or only one of them")
    stream_retry_s: float = Field(30.0, gt=0, description="live, auto: seconds of polling before trying the stream again")
    venue_urls: dict[str, str] = Field(default_factory=dict, description="live: REST base URL per venue (testing)")
    venue_ws_urls: dict[str, str] = Field(default_factory=dict,
                                          description="live: websocket base URL per venue (testing)")

    @field_validator("runtime_id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError(f"runtime_id {value!r} must be a plain file name")
        return value

    @property
    def resolved_runtime_id(self) -> str:
        if self.runtime_id:
            return self.runtime_id
        return f"{self.resolved_deployment}-{self.slot}" if self.slot else f"{self.strategy}-{self.mode}"

    @property
    def resolved_deployment(self) -> str:
        return self.deployment or self.strategy

    @property
    def venue_account(self) -> str:
        """Whose paper venue this is: both slots of a deployment trade the same simulated account."""
        return f"{self.resolved_deployment}-slots" if self.slot else self.resolved_runtime_id

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        if _yaml_file is not None:
            sources.append(_YamlFile(settings_cls, yaml_file=_yaml_file))
        return tuple(sources)


def load_config(config_file: Path | None = None, **overrides) -> RuntimeConfig:
    """The configuration from the file (or `<data>/runtime.yaml` when it exists), env and `overrides`
    (None values are ignored so unset flags do not mask the file)."""
    path = config_file or paths.data_dir() / "runtime.yaml"
    if config_file is not None and not path.exists():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    global _yaml_file
    _yaml_file = path if path.exists() else None
    try:
        return RuntimeConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        if _yaml_file is None:
            raise
        # the same errors, titled with the file (pydantic's title would only say RuntimeConfig)
        raise ValidationError.from_exception_data(f"RuntimeConfig from {_yaml_file}", exc.errors()) from None
    finally:
        _yaml_file = None
