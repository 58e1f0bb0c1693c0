"""Fuzzing every file the pipelines parse: the configuration files (sofia_pipelines/config/*.yaml), source files
of every format the files source reads, and venue payloads the ccxt source parses through ccxt.

A config loader must answer with a ValueError naming the file (and what reads the loaded config only with
ValueError or SchemaError); the files source with a SchemaError naming the file; the ccxt source with a ccxt
error or a SchemaError. Crashes still in the files source are tolerated by name and counted, each with a strict
expected failure that turns into a failure, and so tells, the day it is fixed."""

from __future__ import annotations

import copy
import functools
import json
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from holdout_data import holdout_dir
from fuzzing import FEW, FUZZ, NASTY_JSON, TRIED, json_values, mutations
from sofia_pipelines.defs.anomaly.compute import load_config as load_anomaly_config
from sofia_pipelines.defs.fees.compute import CONFIG_DIR, fee_table, load_yaml, markets_frame, withdrawal_fees
from sofia_pipelines.defs.inventory.assets import current_balances
from sofia_pipelines.defs.risk.compute import risk_config
from sofia_pipelines.defs.slo.compute import load_slo_config
from sofia_runtime.schemas import SchemaError
from sofia_runtime.tax import rules_from_config

# --- configuration files ------------------------------------------------------------------------------------
CONFIG_NAMES = ("fees.yaml", "tax_rules.yaml", "markets.yaml", "inventory.yaml", "risk.yaml", "anomaly.yaml",
                "slo.yaml")
SHIPPED = {name: (CONFIG_DIR / name).read_bytes() for name in CONFIG_NAMES}
yaml_values = json_values | st.sampled_from([".nan", ".inf", "-.inf", "1e400", 2**70, "2026-02-30", "~", "yes", [],
                                             {}, "0x1F", 1.7e308])


def _use(name: str, folder: Path):
    """Load `name` from `folder` as the pipelines do, and hand it to what reads it."""
    path = folder / name
    if name == "anomaly.yaml":
        return load_anomaly_config(path)
    if name == "slo.yaml":
        return load_slo_config(path)
    config = load_yaml(name, folder)
    if name == "risk.yaml":
        return risk_config(config, str(path))
    if name == "fees.yaml":
        markets = markets_frame(load_yaml("markets.yaml"))
        return fee_table(markets, config, {}, static=lambda venue: None), withdrawal_fees(config)
    if name == "tax_rules.yaml":
        return rules_from_config(config)
    if name == "markets.yaml":
        return markets_frame(config)
    return current_balances(duckdb.connect(), config)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _yaml_documents(name: str) -> st.SearchStrategy[bytes]:
    """The shipped file with any field (at any depth) given a value of any type, or dropped, or the file's
    bytes mutated; and text no config is."""
    shipped = yaml.safe_load(SHIPPED[name])
    paths = [p for p in _paths(shipped) if p]

    def edited(t):
        path, value, drop = t
        doc = copy.deepcopy(shipped)
        node = doc
        for key in path[:-1]:
            node = node[key]
        if drop:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")

    return st.one_of(
        st.tuples(st.sampled_from(paths), yaml_values, st.booleans()).map(edited),
        mutations(SHIPPED[name]),
        st.binary(max_size=256),
        st.sampled_from([b"- 1\n", b"42\n", b"&a [*a]\n", b"!!python/object:os.system\n", b"? [1, 2]\n: 3\n",
                         b"[" * 100_000, b"\t", b"'unclosed\n", *NASTY_JSON[:10]]),
    )


def _check_config(name: str, folder: Path, raw: bytes) -> None:
    (folder / name).write_bytes(raw)
    TRIED[f"config/{name}"] += 1
    try:
        _use(name, folder)
    except SchemaError:
        pass  # a loaded config whose rows do not fit their table: names the table
    except ValueError as exc:
        assert not isinstance(exc, UnicodeDecodeError), exc
        assert str(exc).startswith(f"{folder / name}: ") or "config/" in str(exc), exc


@pytest.mark.parametrize("name", CONFIG_NAMES)
@FEW
@given(data=st.data())
def test_a_bad_config_file_is_an_error_naming_it(tmp_path_factory, name, data):
    folder = tmp_path_factory.getbasetemp() / "config"
    folder.mkdir(exist_ok=True)
    (folder / "markets.yaml").write_bytes(SHIPPED["markets.yaml"]) if name != "markets.yaml" else None
    _check_config(name, folder, data.draw(_yaml_documents(name)))


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_each_shipped_config_loads(tmp_path, name):
    (tmp_path / name).write_bytes(SHIPPED[name])
    assert _use(name, tmp_path) is not None


def _config_error(tmp_path, name: str, raw: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(ValueError) as err:
        _use(name, tmp_path)
    assert not isinstance(err.value, UnicodeDecodeError)
    assert str(err.value).startswith(f"{path}: "), err.value
    return str(err.value)


# What the fuzzing found in the loaders, now fixed there (sofia_runtime.config_files.read_yaml): each crashed with
# UnicodeDecodeError, RecursionError or KeyError, naming no file.
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_a_config_file_that_is_not_utf8_is_an_error_naming_it(tmp_path, name):
    assert "UTF-8" in _config_error(tmp_path, name, b"\xff\xfe" + SHIPPED[name])


@pytest.mark.parametrize("name", ["fees.yaml", "anomaly.yaml", "slo.yaml"])  # load_yaml's, anomaly's, slo's reader
def test_a_config_file_nested_too_deeply_is_an_error_naming_it(tmp_path, name):
    _config_error(tmp_path, name, b"[" * 100_000)


def test_a_market_without_its_optional_fields_loads_or_is_refused(tmp_path):
    doc = yaml.safe_load(SHIPPED["markets.yaml"])
    for field in ("min_notional", "source"):
        doc["markets"][0].pop(field, None)
    (tmp_path / "markets.yaml").write_text(yaml.safe_dump(doc))
    try:
        frame = markets_frame(load_yaml("markets.yaml", tmp_path))
    except ValueError as exc:
        assert str(exc).startswith(f"{tmp_path / 'markets.yaml'}: ")
    else:
        assert frame.height == len(doc["markets"])


def test_fees_without_withdrawals_load_or_are_refused(tmp_path):
    doc = yaml.safe_load(SHIPPED["fees.yaml"])
    del doc["withdrawals"]
    (tmp_path / "fees.yaml").write_text(yaml.safe_dump(doc))
    try:
        assert withdrawal_fees(load_yaml("fees.yaml", tmp_path)).is_empty()
    except ValueError as exc:
        assert str(exc).startswith(f"{tmp_path / 'fees.yaml'}: ")


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_a_config_key_given_twice_is_an_error_naming_it(tmp_path, name):
    first_key = next(line.split(":")[0] for line in SHIPPED[name].decode().splitlines()
                     if line and line[0].isalpha())
    # the same value again: only a check for repeated keys can refuse it
    again = json.dumps(yaml.safe_load(SHIPPED[name])[first_key], default=str)
    assert "twice" in _config_error(tmp_path, name, SHIPPED[name] + f"\n{first_key}: {again}\n".encode())


# --- source files of every format the files source reads -------------------------------------------------------
ALL = (datetime(1990, 1, 1), datetime(2100, 1, 1))
CELLS = ["", " ", "abc", "NaN", "nan", "inf", "-inf", "1e400", "-1", "0", str(2**70), str(-(2**70)), "1.5e308",
         "\ufeff1", "1,2", '"', "true", "2021-11-27T00:00:00Z", "9" * 40]


def _head(path: Path, lines: int) -> bytes:
    with path.open("rb") as f:
        return b"".join(f.readline() for _ in range(lines))


def _seeds(holdout: Path) -> dict[str, tuple[str, bytes]]:
    """One small valid file per format, as (path under DIR, bytes): built from the real data, read in place."""
    import gzip
    import io

    candles = pl.read_parquet(holdout / "freqtrade/spot/binance_XRP_ETH_1m.parquet").head(5)
    funding = pl.read_parquet(holdout / "freqtrade/futures/binance_XRP_USDT_USDT_8h_funding_rate.parquet").head(5)

    def parquet(df: pl.DataFrame) -> bytes:
        buf = io.BytesIO()
        df.write_parquet(buf)
        return buf.getvalue()

    nautilus = holdout / "nautilus"
    trades = json.loads(gzip.decompress((holdout / "freqtrade" / "raw" / "binance_XRP_ETH_ccxt_trades.json.gz")
                                        .read_bytes()))[:4]
    return {
        "ohlcv csv": ("ohlcv/binance/XRP_ETH/1m.csv", candles.write_csv().encode()),
        "ohlcv parquet": ("ohlcv/binance/XRP_ETH/1m.parquet", parquet(candles)),
        "ohlcv ccxt json": ("ohlcv/binance/XRP_ETH/1m.json", json.dumps(candles.rows()).encode()),
        "funding csv": ("funding/binance/XRP_USDT.csv", funding.write_csv().encode()),
        "funding parquet": ("funding/binance/XRP_USDT.parquet", parquet(funding)),
        "ccxt trades json": ("binance_XRP_ETH_ccxt_trades.json", json.dumps(trades).encode()),
        "tardis trades csv": ("tardis_bitmex_trades_XBTUSD.csv",
                              _head(nautilus / "tardis__bitmex_trades_XBTUSD.csv", 5)),
        "tardis book snapshot csv": ("tardis_binance-futures_book_snapshot_5_BTCUSDT.csv",
                                     _head(nautilus / "tardis__binance-futures_book_snapshot_5_BTCUSDT.csv", 4)),
        "binance klines csv": ("ADABTC-1m-2021-11-27.csv", _head(nautilus / "ADABTC-1m-2021-11-27.csv", 4)),
        "binance trades csv": ("BNBUSDT-trades-2020-03-08.csv",
                               b"51175358,17.8,5.69,101.2,1583709433583,True,True\n"
                               b"51175359,17.81,1.5,26.7,1583709433590,False,True\n"),
        "binance aggTrades csv": ("ETHBTC-aggTrades-2020-12-25.csv",
                                  b"0,0.20000000,50.00000000,0,0,1608872400000,False,True\n"
                                  b"1,0.20000100,1.00000000,1,3,1608872400001,True,True\n"),
        "binance bookTicker csv": ("BTCUSDT-bookTicker-2023-01-01.csv",
                                   b"update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,"
                                   b"transaction_time,event_time\n"
                                   b"2418637252553,16537.5,3.5,16537.6,10.1,1672531200003,1672531200008\n"
                                   b"2418637252700,16537.4,1.0,16537.6,9.0,1672531200150,1672531200155\n"),
        "binance fundingRate csv": ("BTCUSDT-fundingRate-2023-01.csv",
                                    b"calc_time,funding_interval_hours,last_funding_rate\n1672531200000,8,0.00010000\n"
                                    b"1672560000000,8,-0.00002345\n"),
        # the real file's snapshot holds asks only: a bid added, so that a book exists
        "tardis incremental L2 csv": ("tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv", _head(
            nautilus / "tardis__deribit_incremental_book_L2_BTC-PERPETUAL.csv", 3)
            + b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,bid,6421,500\n"),
        "freqtrade trades json": ("binance/XRP_ETH-trades.json", json.dumps(
            [[t["timestamp"], t["id"], None, t["side"], t["price"], t["amount"], t["cost"]] for t in trades]).encode()),
        "okx funding json": ("okx_funding.json", (nautilus / "okx__test_data__http_get_funding_rate_history.json")
                             .read_bytes()),
        "bybit funding json": ("bybit_funding.json", (nautilus / "bybit__test_data__http_get_funding_history.json")
                               .read_bytes()),
        "binance funding json": ("binance_funding.json", (
            nautilus / "binance__resources__http_responses__http_futures_market_funding_rate.json").read_bytes()),
        "hyperliquid funding json": ("hyperliquid_funding.json", (
            nautilus / "hyperliquid__test_data__http_funding_history.json").read_bytes()),
        "ohlcv csv.gz": ("ohlcv/binance/XRP_ETH/1m.csv.gz", gzip.compress(candles.write_csv().encode(), mtime=0)),
    }


class _Quiet(dict):
    def __repr__(self) -> str:  # hypothesis prints a failing example's arguments: not kilobytes of seed files
        return f"<{len(self)} entries: {', '.join(list(self)[:3])}, …>"


@pytest.fixture(scope="module")
def seeds(holdout) -> dict[str, tuple[str, bytes]]:
    return _Quiet(_seeds(holdout))


def _csv_cells(valid: bytes) -> st.SearchStrategy[bytes]:
    """The CSV with one cell (header included) replaced by a value a parser trips on, or a row cut short."""
    rows = [line.split(b",") for line in valid.splitlines()]

    def replaced(t):
        i, j, value = t
        copy_ = [list(r) for r in rows]
        row = copy_[i % len(copy_)]
        row[j % len(row)] = value.encode("utf-8", "surrogatepass")
        return b"\n".join(b",".join(r) for r in copy_) + b"\n"

    return st.tuples(st.integers(0, 50), st.integers(0, 50), st.sampled_from(CELLS) | st.text(max_size=6)).map(replaced)


def _source_files(valid: bytes, csv: bool) -> st.SearchStrategy[bytes]:
    parts = [mutations(valid), st.binary(max_size=256), st.sampled_from(NASTY_JSON)]
    if csv:
        parts.append(_csv_cells(valid))
    else:
        parts.append(json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")))
    return st.one_of(*parts)


_run = [0]


def _read_all(root: Path, path: Path) -> None:
    """Everything the source offers: tables, days and every table's rows."""
    from sofia_pipelines.defs.market_data.files import FilesSource

    src = FilesSource(root)
    for table in sorted(src.provides()):
        src.load(table, *ALL)
    src.available_days()


def _check_source(fmt: str, rel: str, raw: bytes, base: Path) -> None:
    _run[0] += 1
    root = base / f"dir{_run[0]}"  # a fresh DIR each time: the source caches by path, mtime and size
    path = root / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)
    TRIED[f"files source: {fmt}"] += 1
    try:
        _read_all(root, path)
    except SchemaError as exc:
        assert str(exc).startswith(str(path)), exc


def _source_error(root: Path, rel: str, raw: bytes) -> SchemaError:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    with pytest.raises(SchemaError) as err:
        _read_all(root, path)
    assert str(err.value).startswith(str(path)), err.value
    return err.value


@pytest.mark.parametrize("fmt, cut", [("ohlcv parquet", 0.5), ("ohlcv parquet", 0.0), ("funding parquet", 0.9)])
def test_a_damaged_parquet_file_is_a_schema_error_naming_it(seeds, tmp_path, fmt, cut):
    rel, valid = seeds[fmt]
    _source_error(tmp_path, rel, valid[:max(int(len(valid) * cut), 4)])


def test_a_feather_file_cut_to_its_magic_is_a_schema_error_naming_it(tmp_path):
    _source_error(tmp_path, "binance/XRP_ETH-1m.feather", b"ARROW1")


@pytest.mark.parametrize("text", [b'{"a":' * 100_000, b"[" * 100_000])
def test_a_json_file_nested_too_deeply_is_a_schema_error_naming_it(tmp_path, text):
    _source_error(tmp_path, "ohlcv/binance/XRP_ETH/1m.json", text)


SOURCE_FORMATS = [
    "ohlcv csv", "ohlcv csv.gz", "ohlcv parquet", "ohlcv ccxt json", "funding csv", "funding parquet",
    "ccxt trades json", "freqtrade trades json", "okx funding json", "bybit funding json", "binance funding json",
    "hyperliquid funding json", "tardis trades csv", "tardis book snapshot csv", "tardis incremental L2 csv",
    "binance klines csv", "binance trades csv", "binance aggTrades csv", "binance bookTicker csv",
    "binance fundingRate csv"]


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
@FEW
@given(data=st.data())
def test_a_bad_source_file_is_a_schema_error_naming_it(seeds, tmp_path_factory, fmt, data):
    rel, valid = seeds[fmt]
    raw = data.draw(_source_files(valid, csv=rel.endswith(".csv")))
    _check_source(fmt, rel, raw, tmp_path_factory.getbasetemp() / "files")


@pytest.mark.parametrize("fmt", ["ohlcv csv", "tardis trades csv", "binance klines csv", "ohlcv ccxt json"])
def test_a_source_file_cut_at_every_length_is_a_schema_error_or_its_first_rows(seeds, tmp_path, fmt):
    rel, valid = seeds[fmt]
    for n in range(len(valid)):
        _check_source(fmt, rel, valid[:n], tmp_path)


def test_each_seed_file_reads(seeds, tmp_path):
    from sofia_pipelines.defs.market_data.files import FilesSource

    for fmt, (rel, valid) in seeds.items():
        root = tmp_path / fmt.replace(" ", "_")
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(valid)
        src = FilesSource(root)
        assert src.provides(), fmt
        assert all(src.load(t, *ALL).height for t in src.provides()), fmt


# --- venue payloads the ccxt source parses (through ccxt's own HTTP handling and parsers) -------------------------
PAYLOAD_TABLES = ("candles", "trades", "books", "funding")


@functools.cache
def _recorded() -> dict:
    """ccxt's recorded Binance responses, read in place from the held-out data."""
    return json.loads((holdout_dir() / "ccxt" / "response" / "binance.json").read_text())["methods"]


def _payload(table: str) -> tuple[str, object, str]:
    """(URL part, a recorded Binance response, the symbol it is asked for)."""
    recorded = _recorded()
    return {
        "candles": ("/api/v3/klines", recorded["fetchOHLCV"][0]["httpResponse"], "BTC/USDT"),
        "trades": ("aggTrades", next(c for c in recorded["fetchTrades"] if c["input"][0] == "BTC/USDT")
                   ["httpResponse"], "BTC/USDT"),
        "books": ("/api/v3/depth", next(c for c in recorded["fetchOrderBook"] if c["input"][0] == "BTC/USDT")
                  ["httpResponse"], "BTC/USDT"),
        "funding": ("/fapi/v1/fundingRate", [{"symbol": "BTCUSDT", "fundingTime": 1706630400000,
                                              "fundingRate": "0.00010000", "markPrice": "43500.1"}], "BTC/USDT:USDT"),
    }[table]


CCXT_WINDOW = (datetime(2024, 1, 30), datetime(2024, 1, 31))


def _replay_session(body: bytes):
    """requests' place in ccxt: every request answered 200 with the body given, so ccxt's own JSON decoding,
    error handling and parsers see it."""
    import requests

    class ReplaySession(requests.Session):
        def request(self, method, url, **kwargs):
            response = requests.Response()
            response.status_code, response.reason, response.url = 200, "OK", url
            response._content = body
            response.headers["Content-Type"] = "application/json"
            return response

    return ReplaySession()


_EXCHANGE: list = []


def _ccxt_source(body: bytes, symbol: str):
    import ccxt

    from sofia_pipelines.defs.market_data.ccxt_source import CcxtSource

    if not _EXCHANGE:  # one exchange for every payload (building one and its markets is the slow part)
        exchange = ccxt.binance({"enableRateLimit": False})
        exchange.set_markets(json.loads((holdout_dir() / "ccxt" / "markets" / "binance.json").read_text()))
        _EXCHANGE.append(exchange)
    exchange = _EXCHANGE[0]
    exchange.session = _replay_session(body)
    return CcxtSource(["binance"], exchanges={"binance": exchange}, symbols=[symbol])


def _payloads(recorded) -> st.SearchStrategy[bytes]:
    text = json.dumps(recorded).encode()
    paths = [p for p in _paths(recorded) if p]

    def edited(t):
        path, value = t
        doc = copy.deepcopy(recorded)
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return json.dumps(doc).encode("utf-8", "surrogatepass")

    return st.one_of(st.tuples(st.sampled_from(paths), json_values).map(edited), mutations(text),
                     st.binary(max_size=128), st.sampled_from(NASTY_JSON), json_values.map(
                         lambda v: json.dumps(v).encode("utf-8", "surrogatepass")))


CCXT_CRASHES: dict[str, tuple[type, str, str]] = {}  # crash -> (type, function it comes through, what it is)


def _check_ccxt(table: str, body: bytes) -> None:
    import ccxt

    from sofia_runtime.schemas import RAW_TABLES

    _, _, symbol = _payload(table)
    TRIED[f"ccxt source: {table}"] += 1
    try:
        df = _ccxt_source(body, symbol).load(table, *CCXT_WINDOW)
    except (ccxt.BaseError, SchemaError):
        return
    except Exception as exc:  # noqa: BLE001 - a known crash is counted, anything else fails
        frames = set()
        tb = exc.__traceback__
        while tb is not None:
            frames.add(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        crash = next((c for c, (kind, where, _) in CCXT_CRASHES.items() if isinstance(exc, kind) and where in frames),
                     None)
        if crash is None:
            raise
        TRIED[f"ccxt source: {table} (known crash: {crash})"] += 1
        return
    assert df.schema == RAW_TABLES[table].polars_schema


@pytest.mark.parametrize("table", PAYLOAD_TABLES)
@FUZZ
@given(data=st.data())
def test_a_bad_venue_payload_is_a_ccxt_or_schema_error(table, data):
    _check_ccxt(table, data.draw(_payloads(_payload(table)[1])))


@pytest.mark.parametrize("table", PAYLOAD_TABLES)
def test_each_recorded_payload_reads(table):
    _, recorded, symbol = _payload(table)
    assert _ccxt_source(json.dumps(recorded).encode(), symbol).load(table, datetime(2020, 1, 1),
                                                                     datetime(2030, 1, 1)).height


@pytest.mark.parametrize("table, body, call", [
    ("books", {"lastUpdateId": "1", "bids": 5e-247, "asks": [["42574.31", "0.0087"]]}, "fetch_order_book BTC/USDT"),
    ("funding", {"code": 0, "msg": 1.1e-308}, "fetch_funding_rate_history BTC/USDT:USDT"),
    ("trades", [None], "fetch_trades BTC/USDT"),
])
def test_a_payload_ccxt_cannot_parse_is_a_bad_response_naming_the_call(table, body, call):
    """ccxt's own parsers raised TypeError (bids not a list, a trade that is null) and KeyError (funding history
    that is an object), out of the ccxt source."""
    import ccxt

    with pytest.raises(ccxt.BadResponse, match=f"^binance {call}: the response does not parse: "):
        _ccxt_source(json.dumps(body).encode(), _payload(table)[2]).load(table, *CCXT_WINDOW)


@pytest.mark.parametrize("table", ["books", "funding"])
def test_a_payload_cut_at_every_length_is_a_ccxt_or_schema_error(table):
    text = json.dumps(_payload(table)[1]).encode()
    for n in range(len(text)):
        _check_ccxt(table, text[:n])


@pytest.mark.parametrize("name", ["inventory.yaml", "slo.yaml"])
def test_a_config_file_cut_at_every_length_is_an_error_naming_it_or_loads(tmp_path, name):
    (tmp_path / "markets.yaml").write_bytes(SHIPPED["markets.yaml"])
    for n in range(0, len(SHIPPED[name]), 2):
        _check_config(name, tmp_path, SHIPPED[name][:n])


# --- ccxt markets dumps beside the data (read by the markets asset: sofia_pipelines/defs/fees/markets.py) -----------
@pytest.fixture(scope="module")
def markets_dump(holdout) -> dict:
    return _Quiet(json.loads((holdout / "ccxt" / "markets" / "binance.json").read_text()))


def _dump_with(dump: dict, symbol: str, path: tuple, value) -> dict:
    edited = copy.deepcopy(dump)
    node = edited[symbol]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return edited


def _dump_markets(dump: dict, symbol: str, origin: Path):
    from sofia_pipelines.defs.fees.markets import dump_markets

    TRIED["markets dump: fees.markets.dump_markets"] += 1
    try:
        return dump_markets("binance", origin, dump, [symbol])
    except SchemaError as exc:
        assert str(exc).startswith(str(origin)), exc


@settings(FUZZ)
@given(data=st.data())
def test_a_bad_markets_dump_is_a_schema_error_naming_it(markets_dump, data):
    symbol = "BTC/USDT"
    entry = {k: v for k, v in markets_dump[symbol].items() if k != "info"}
    path = data.draw(st.sampled_from([p for p in _paths(entry) if p]))
    _dump_markets(_dump_with(markets_dump, symbol, path, data.draw(json_values)), symbol, Path("/data/binance.json"))


@pytest.mark.parametrize("path, value", [(("limits", "amount"), 2**70), (("precision",), "abc"),
                                         (("limits", "amount", "min"), "abc")])
def test_a_markets_dump_field_of_another_type_is_a_schema_error_naming_it(markets_dump, path, value):
    from sofia_pipelines.defs.fees.markets import dump_markets

    with pytest.raises(SchemaError, match="^/data/binance.json, field 'BTC/USDT"):
        dump_markets("binance", Path("/data/binance.json"), _dump_with(markets_dump, "BTC/USDT", path, value),
                     ["BTC/USDT"])


def test_the_real_markets_dump_reads(markets_dump):
    assert _dump_markets(markets_dump, "BTC/USDT", Path("/data/binance.json")).height == 1
