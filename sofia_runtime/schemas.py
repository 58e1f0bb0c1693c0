"""One schema definition per table that crosses a boundary.

The raw warehouse tables, the serving-snapshot tables the runtime reads and the asset checks all
use these definitions. Times are UTC and stored as naive timestamps (DuckDB ``TIMESTAMP``,
polars ``Datetime("ms")``); a column named ``ts`` is the row's event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

TS = pl.Datetime("ms")


class SchemaError(ValueError):
    """A frame does not fit its table: names where (file or table), the row and the field."""

    def __init__(self, origin: str, message: str, row: int | None = None, field: str | None = None):
        self.origin, self.row, self.field = origin, row, field
        where = origin
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: dict[str, pl.DataType]
    keys: tuple[str, ...]
    nullable: frozenset[str] = field(default_factory=frozenset)
    time_column: str | None = "ts"
    description: str = ""

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema(self.columns)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)

    def duckdb_columns(self) -> str:
        return ", ".join(f'"{c}" {_duckdb_type(t)}' for c, t in self.columns.items())

    def conform(self, df: pl.DataFrame, origin: str, row_offset: int = 1) -> pl.DataFrame:
        """Select and cast this table's columns; raise SchemaError naming what does not fit (rows counted
        from `row_offset`)."""
        # an absent nullable column is one the source does not have (a receive time, a mark price): nulls
        absent = [c for c in self.columns if c not in df.columns and c in self.nullable]
        if absent:
            df = df.with_columns(pl.lit(None, dtype=self.columns[c]).alias(c) for c in absent)
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(origin, f"missing column(s) {missing}; expected {list(self.columns)}", field=missing[0])
        out = []
        for name, dtype in self.columns.items():
            col = df.get_column(name)
            if col.dtype != dtype:
                try:
                    cast = col.cast(dtype, strict=False)
                except Exception as exc:  # polars raises several types for impossible casts
                    raise SchemaError(origin, f"cannot read as {dtype}: {exc}", field=name) from exc
                bad = cast.is_null() & col.is_not_null()
                if bad.any():
                    row = int(bad.arg_true()[0])
                    raise SchemaError(origin, f"value {col[row]!r} is not a valid {dtype}", row=row + row_offset,
                                      field=name)
                col = cast
            if name not in self.nullable and col.null_count():
                row = int(col.is_null().arg_true()[0])
                raise SchemaError(origin, "null where a value is required", row=row + row_offset, field=name)
            out.append(col)
        return pl.DataFrame(out)


def _duckdb_type(dtype: pl.DataType) -> str:
    if dtype == pl.Utf8:
        return "VARCHAR"
    if dtype == pl.Float64:
        return "DOUBLE"
    if dtype == pl.Int64:
        return "BIGINT"
    if dtype == pl.Int32:
        return "INTEGER"
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype == pl.Date:
        return "DATE"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision}, {dtype.scale})"
    raise TypeError(f"no DuckDB type for {dtype}")


def _schema(name: str, keys: tuple[str, ...], nullable: tuple[str, ...] = (), time_column: str | None = "ts",
            description: str = "", **columns: pl.DataType) -> TableSchema:
    return TableSchema(name, dict(columns), keys, frozenset(nullable), time_column, description)


U, F, I, B, D = pl.Utf8, pl.Float64, pl.Int64, pl.Boolean, pl.Date
MONEY = pl.Decimal(38, 18)  # journal amounts are Decimal strings; they stay exact in the warehouse

# --- raw market data (warehouse schema `raw`) --------------------------------------------------
# `venue` is ccxt's exchange id (binance, okx, bybit …). `symbol` is ccxt's unified symbol: BTC/USDT for
# spot, BTC/USDT:USDT for a USDT-margined perp, BTC/USD:BTC for an inverse perp. `market` is "spot" or "perp".
# `ts` is the exchange's time; `local_ts`, where a recording has it, the time the recorder received the row.
CANDLES = _schema("candles", ("venue", "symbol", "timeframe", "ts"),
                  description="OHLCV candles of every timeframe a source has (ccxt style: 1m, 5m, 1h, 8h, 1d), "
                              "ts = bar open time; analytics resample from the finest one",
                  venue=U, symbol=U, market=U, timeframe=U, ts=TS, open=F, high=F, low=F, close=F, volume=F)
BOOKS = _schema("books", ("venue", "symbol", "ts"), nullable=("local_ts",), description="top-of-book snapshots",
                venue=U, symbol=U, market=U, ts=TS, bid=F, ask=F, bid_size=F, ask_size=F, local_ts=TS)
TRADES = _schema("trades", ("venue", "symbol", "trade_id"), nullable=("local_ts",),
                 description="public trades (side = taker side)",
                 venue=U, symbol=U, market=U, ts=TS, trade_id=U, side=U, price=F, amount=F, local_ts=TS)
FUNDING = _schema("funding", ("venue", "symbol", "ts"), nullable=("mark_price", "index_price"),
                  description="perp funding rates as charged per interval, with the mark and index price where known",
                  venue=U, symbol=U, ts=TS, funding_rate=F, mark_price=F, index_price=F)
LATENCY = _schema("latency", ("venue", "endpoint", "ts"), nullable=("latency_ms", "error"),
                  description="latency-probe samples; latency_ms null and error set when the probe failed",
                  venue=U, endpoint=U, ts=TS, latency_ms=F, ok=B, error=U)
FX = _schema("fx", ("pair", "ts"), description="FX rates, e.g. USD/TRY = TRY per USD", pair=U, ts=TS, rate=F)

RAW_TABLES: dict[str, TableSchema] = {s.name: s for s in (CANDLES, BOOKS, TRADES, FUNDING, LATENCY, FX)}
LATENCY_ENDPOINTS = ("public_rest", "private_rest", "websocket")

# --- serving snapshot tables (pipelines -> runtime) ---------------------------------------------
FEE_TABLE = _schema(
    "fee_table", ("venue", "symbol", "tier", "valid_from"), nullable=("valid_to", "funding_interval_hours"),
    time_column=None, description="maker/taker per venue, symbol and tier; `selected` marks the desk's tier",
    venue=U, symbol=U, market=U, tier=U, min_volume_30d_usd=F, maker=F, taker=F,
    funding_interval_hours=F, valid_from=D, valid_to=D, source=U, selected=B)
WITHDRAWAL_FEES = _schema(
    "withdrawal_fees", ("venue", "asset", "network", "valid_from"), nullable=("valid_to",), time_column=None,
    description="withdrawal fee per venue, asset and network, in units of the asset",
    venue=U, asset=U, network=U, fee=F, valid_from=D, valid_to=D, source=U)
TAX_RULES = _schema(
    "tax_rules", ("rule_id", "valid_from"), nullable=("valid_to",), time_column=None,
    description="effective-dated Turkish tax parameters; `enabled` is false for proposed rules unless switched on",
    rule_id=U, kind=U, rate=F, valid_from=D, valid_to=D, status=U, enabled=B, source=U)
ROUTE_TABLE = _schema(
    "route_table", ("symbol", "side", "hour"),
    nullable=("runner_up_venue", "runner_up_cost_bps", "margin_bps", "method", "inputs"),
    time_column=None, description="cheapest venue per symbol, side and UTC hour for `notional_usd`; `method` names "
                                  "how the best venue's spread and latency were had, `inputs` what its cost left out",
    symbol=U, side=U, hour=I, notional_usd=F, best_venue=U, best_cost_bps=F,
    runner_up_venue=U, runner_up_cost_bps=F, margin_bps=F, method=U, inputs=U)
SESSION_SCHEDULE = _schema(
    "session_schedule", ("venue", "symbol", "hour"), nullable=("method", "inputs"), time_column=None,
    description="which symbols trade on which venue in which UTC hour; `inputs` names the rules an absent input "
                "left unapplied",
    venue=U, symbol=U, hour=I, active=B, score=F, reason=U, method=U, inputs=U)
FILL_MODEL = _schema(
    "fill_model", ("venue", "symbol", "side"), nullable=("method", "inputs"), time_column=None,
    description="p(fill within h) = 1 - exp(-A * exp(-k * d) * (vol / vol_ref) ** vol_exponent * h), "
                "d = distance from mid in spreads, h in seconds",
    venue=U, symbol=U, side=U, intensity_a=F, decay_k=F, vol_ref=F, vol_exponent=F, brier=F, n_obs=I,
    method=U, inputs=U)
FUNDING_OPPORTUNITIES = _schema(
    "funding_opportunities", ("venue", "symbol"), nullable=("breakeven_hours", "method", "inputs"),
    time_column=None,
    description="delta-neutral spot/perp carry; only rows with offered=true may be traded",
    venue=U, symbol=U, spot_symbol=U, direction=U, mean_funding_rate=F, observed_interval_hours=F,
    annualized_funding=F, fees_cost=F, spread_cost=F, basis_risk_charge=F, net_annual_carry=F,
    breakeven_hours=F, offered=B, reason=U, method=U, inputs=U)
INVENTORY_TARGETS = _schema(
    "inventory_targets", ("venue", "asset"), time_column=None,
    description="target balance per venue and asset with a tolerance band",
    venue=U, asset=U, target=F, lower=F, upper=F)
RISK_LIMITS = _schema(
    "risk_limits", ("venue", "symbol"), time_column=None,
    description="limits the runtime trades within",
    venue=U, symbol=U, max_position=F, max_notional_usd=F, max_open_orders=I, daily_loss_limit_usd=F)
MARKETS = _schema(
    "markets", ("venue", "symbol"), nullable=("min_notional", "source"), time_column=None,
    description="precision and limits per venue and symbol (tick and step sizes); `source` says how each was resolved",
    venue=U, symbol=U, market=U, base=U, quote=U, price_tick=F, amount_step=F, min_amount=F, min_notional=F,
    source=U)

SERVING_TABLES: dict[str, TableSchema] = {
    s.name: s for s in (FEE_TABLE, WITHDRAWAL_FEES, TAX_RULES, ROUTE_TABLE, SESSION_SCHEDULE, FILL_MODEL,
                        FUNDING_OPPORTUNITIES, INVENTORY_TARGETS, RISK_LIMITS, MARKETS)
}
# The day of market data the paper runtime replays travels in the snapshot too, as replay_<raw table>.
REPLAY_TABLES: dict[str, TableSchema] = {f"replay_{t}": RAW_TABLES[t] for t in ("books", "trades", "latency", "funding")}

# --- the audit journal as tables (runtime -> pipelines, schema `audit`) ---------------------------
AUDIT_EVENTS = _schema(
    "events", ("runtime_id", "seq"), description="every journal record; payload is its canonical JSON",
    runtime_id=U, seq=I, ts=TS, kind=U, payload=U, prev_hash=U, hash=U, file=U, line=I)
FILLS = _schema(
    "fills", ("runtime_id", "trade_id"), nullable=("order_id", "client_order_id", "fee_currency", "liquidity",
                                                   "market_ts"),
    description="the runtime's fills as journaled; money exact (DECIMAL)",
    runtime_id=U, seq=I, ts=TS, trade_id=U, order_id=U, client_order_id=U, venue=U, symbol=U, side=U,
    price=MONEY, amount=MONEY, fee=MONEY, fee_currency=U, liquidity=U, strategy=U, market_ts=TS)
BALANCES = _schema(
    "balances", ("runtime_id", "venue", "asset", "ts"), description="venue balances the runtime journaled",
    runtime_id=U, ts=TS, venue=U, asset=U, total=MONEY)
RECONCILIATION = _schema(
    "reconciliation", ("account", "item", "id"), nullable=("detail",), time_column=None,
    description="each order and fill of a venue account's runtimes against the venue's own record: matched, "
                "missing_at_venue, missing_in_journal or mismatched (detail names the fields)",
    account=U, venue=U, item=U, id=U, status=U, detail=U)
NET_PNL_DAYS = _schema(
    "net_pnl_days", ("account", "day"), time_column=None,
    description="realized P&L of the runtime's fills per account (runtime) and day, before profit taxes",
    account=U, day=D, gross_usdt=MONEY, fees_usdt=MONEY, transaction_tax_usdt=MONEY, pre_tax_usdt=MONEY,
    gross_try=MONEY, fees_try=MONEY, transaction_tax_try=MONEY)
NET_PNL_QUARTERS = _schema(
    "net_pnl_quarters", ("account", "year", "quarter"), time_column=None,
    description="gross -> fees -> transaction tax -> withholding -> profit tax -> net per account and quarter",
    account=U, year=I, quarter=I, usd_try=MONEY, gross_try=MONEY, fees_try=MONEY, transaction_tax_try=MONEY,
    withholding_try=MONEY, profit_tax_try=MONEY, net_try=MONEY, gross_usdt=MONEY, fees_usdt=MONEY,
    transaction_tax_usdt=MONEY, withholding_usdt=MONEY, profit_tax_usdt=MONEY, net_usdt=MONEY)
AUDIT_TABLES: dict[str, TableSchema] = {s.name: s for s in (AUDIT_EVENTS, FILLS, BALANCES, RECONCILIATION,
                                                            NET_PNL_DAYS, NET_PNL_QUARTERS)}

# --- SLOs and error budgets (feature N, warehouse schema `audit`) ---------------------------------
# One row per SLI and evaluation. `good`/`total` are counted in `counted` (seconds for the time-based SLIs,
# records or items otherwise); burn rate = (1 - good/total) / error_budget over the window named.
SLO_REPORT = _schema(
    "slo_report", ("evaluated_at", "sli"), nullable=("measured", "ratio", "detail"), time_column="evaluated_at",
    description="per SLI and evaluation: measured value, target, good/total over the rolling window, remaining "
                "error budget, short- and long-window burn rates and status (ok, burning, exhausted, no_data)",
    evaluated_at=TS, sli=U, objective=U, measured=F, unit=U, target=F, window_days=F, counted=U, good=F, total=F,
    ratio=F, error_budget=F, remaining_budget=F, short_window_hours=F, burn_rate_short=F, burn_rate_long=F,
    status=U, detail=U)

# --- anomaly detector and profit attribution (features I and J, warehouse schema `analytics`) ---------------
ANOMALY_SCORES = _schema(
    "anomaly_scores", ("metric", "entity", "window_start"), nullable=("median", "mad", "scale", "z", "since"),
    time_column="window_start",
    description="robust z-score of each metric per entity and window: z = (value - median) / scale over the "
                "trailing windows, scale = max(1.4826 * MAD, the metric's floor); exceeds = beyond the threshold "
                "in the metric's bad direction, streak = consecutive exceeding windows (since = the first), "
                "anomalous = streak >= persist_windows",
    metric=U, entity=U, source=U, window_start=TS, value=F, median=F, mad=F, scale=F, z=F, n_baseline=I,
    exceeds=B, streak=I, since=TS, anomalous=B)
ANOMALY_ACTIONS = _schema(
    "anomaly_actions", ("metric", "entity", "since"), time_column="acted_at",
    description="what the detector did about each anomaly episode (metric, entity, first window): paused "
                "(wrote the pause control file) or already_paused (someone had; left as it was)",
    metric=U, entity=U, since=TS, acted_at=TS, action=U, paused_by=U, reason=U)
PROFIT_ATTRIBUTION = _schema(
    "profit_attribution", ("strategy", "venue", "symbol", "day"), nullable=("mark_start_usd",), time_column=None,
    description="P&L per strategy, venue, symbol and market day in USD: edge + slippage + inventory_mtm + funding "
                "+ fees + transaction_tax + profit_tax = net exactly (costs negative); net = cash_flow + "
                "inventory_value_end - inventory_value_start + fees + taxes + funding",
    strategy=U, venue=U, symbol=U, day=D, quote=U, fills=I, bought=MONEY, sold=MONEY, position_start=MONEY,
    position_end=MONEY, mark_start_usd=MONEY, mark_end_usd=MONEY, cash_flow_usd=MONEY,
    inventory_value_start_usd=MONEY, inventory_value_end_usd=MONEY, edge_usd=MONEY, slippage_usd=MONEY,
    inventory_mtm_usd=MONEY, funding_usd=MONEY, fees_usd=MONEY, transaction_tax_usd=MONEY, profit_tax_usd=MONEY,
    net_usd=MONEY)

# --- risk backtest and Monte Carlo (feature H, warehouse schema `analytics`, daily-partitioned by `day`) ------
RISK_BACKTEST_PNL = _schema(
    "risk_backtest_pnl", ("strategy",), time_column=None,
    description="the day's P&L in USD of each strategy's rules replayed by the runtime's engine on paper venues "
                "(each day starts flat; what is held at the end is marked to mid), and of the book (their sum): "
                "net = gross - fees + funding - transaction tax",
    strategy=U, net_usd=F, gross_usd=F, fees_usd=F, funding_usd=F, tax_usd=F, end_exposure_usd=F, decisions=I,
    passed=I, orders=I, fills=I, instruments=I, events=I, seconds=F)
RISK_BACKTEST_FILLS = _schema(
    "risk_backtest_fills", ("strategy", "trade_id"), nullable=("client_order_id", "tag", "liquidity", "fee_currency"),
    description="the fills the backtest assumed (the paper venue's fill model), as the engine journaled them",
    strategy=U, ts=TS, trade_id=U, client_order_id=U, tag=U, venue=U, symbol=U, side=U, liquidity=U,
    price=MONEY, amount=MONEY, fee=MONEY, fee_currency=U, notional_usd=F)
RISK_BACKTEST_POSITIONS = _schema(
    "risk_backtest_positions", ("strategy", "venue", "symbol"), time_column=None,
    description="what each strategy holds at the end of the backtested day (base units), marked to mid, in USD",
    strategy=U, venue=U, symbol=U, position=F, mark=F, notional_usd=F)
RISK_MONTE_CARLO = _schema(
    "risk_monte_carlo", ("method", "scope", "metric"), nullable=("ci_low", "ci_high"), time_column=None,
    description="Monte Carlo risk per method (bootstrap, student_t) and scope (book or a strategy): VaR and CVaR "
                "at 95/99 % over 1 day and the horizon (losses positive, USD), maximum drawdown, Sharpe and Sortino "
                "(median across paths with an interval), probability of a day losing the daily loss limit",
    method=U, scope=U, metric=U, value=F, ci_low=F, ci_high=F, paths=I, horizon_days=I, history_days=I)
RISK_MC_QUANTILES = _schema(
    "risk_mc_quantiles", ("method", "scope", "quantity", "q"), time_column=None,
    description="distribution of the simulated 1-day P&L, horizon P&L and maximum drawdown (USD): quantiles "
                "per method and scope",
    method=U, scope=U, quantity=U, q=F, value=F)
RISK_TABLES: dict[str, TableSchema] = {s.name: s for s in (RISK_BACKTEST_PNL, RISK_BACKTEST_FILLS,
                                                           RISK_BACKTEST_POSITIONS, RISK_MONTE_CARLO,
                                                           RISK_MC_QUANTILES)}
