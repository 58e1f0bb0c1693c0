"""Fuzzing every file the pipelines parse: the configuration files (sofia_pipelines/config/*.yaml), source files
of every format the files source reads, and venue payloads the ccxt source parses through ccxt.

A config loader must answer with a ValueError naming the file (and what reads the loaded config only with
ValueError or SchemaError); the files source with a SchemaError naming the file; the ccxt source with a ccxt
error or a SchemaError. Crashes still in code being finished elsewhere are strict expected failures: each turns
into a failure, and so tells, the day it is fixed."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FEW, FUZZ, NASTY_JSON, TRIED, json_values, mutations, nasty
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


# Crashes the fuzzing found in loaders finished elsewhere (sofia_pipelines/defs/*/compute.py): the fuzz tests
# tolerate exactly these (and count them), and each has a strict expected failure below that passes the day the
# loader answers with an error naming the file.
KNOWN_CRASHES = {
    "not_utf8": (UnicodeDecodeError, None, "a file that is not UTF-8 raises UnicodeDecodeError without the file's "
                                          "name (read_text() outside the loader's try)"),
    "deep_nesting": (RecursionError, None, "YAML nested 100,000 deep raises RecursionError from PyYAML's composer"),
    "markets_optional": (KeyError, "markets_frame", "markets.yaml without a market's optional min_notional or "
                                                    "source: KeyError in markets_frame (the model dumps only what is "
                                                    "set)"),
    "fees_withdrawals": (KeyError, "withdrawal_fees", "fees.yaml without `withdrawals`: KeyError in "
                                                      "withdrawal_fees"),
}
FOUND: dict[str, int] = {}


def _known(exc: BaseException) -> str | None:
    frames = set()
    tb = exc.__traceback__
    while tb is not None:
        frames.add(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    for crash, (kind, where, _) in KNOWN_CRASHES.items():
        if isinstance(exc, kind) and (where is None or where in frames):
            return crash
    return None


def _check_config(name: str, folder: Path, raw: bytes) -> None:
    (folder / name).write_bytes(raw)
    TRIED[f"config/{name}"] += 1
    try:
        _use(name, folder)
    except SchemaError:
        pass  # a loaded config whose rows do not fit their table: names the table
    except Exception as exc:  # noqa: BLE001 - sorted below: the documented error, a known crash, or a failure
        if isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError):
            assert str(exc).startswith(f"{folder / name}: ") or "config/" in str(exc), exc
            return
        crash = _known(exc)
        if crash is None:
            raise
        FOUND[f"{name}: {crash}"] = FOUND.get(f"{name}: {crash}", 0) + 1
        TRIED[f"config/{name} (known crash: {crash})"] += 1


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
    try:
        _use(name, tmp_path)
    except (UnicodeDecodeError, RecursionError, KeyError):
        raise  # the known crashes: what the strict expected failures wait to see gone
    except ValueError as exc:
        assert str(exc).startswith(f"{path}: "), exc
        return str(exc)
    pytest.fail(f"{path} was accepted")


def _xfail(crash: str):
    return pytest.mark.xfail(strict=True, raises=KNOWN_CRASHES[crash][0], reason=KNOWN_CRASHES[crash][2])


@_xfail("not_utf8")
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_a_config_file_that_is_not_utf8_is_an_error_naming_it(tmp_path, name):
    _config_error(tmp_path, name, b"\xff\xfe" + SHIPPED[name])


@_xfail("deep_nesting")
@pytest.mark.parametrize("name", ["fees.yaml", "anomaly.yaml", "slo.yaml"])  # load_yaml's, anomaly's, slo's reader
def test_a_config_file_nested_too_deeply_is_an_error_naming_it(tmp_path, name):
    _config_error(tmp_path, name, b"[" * 100_000)


@_xfail("markets_optional")
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


@_xfail("fees_withdrawals")
def test_fees_without_withdrawals_load_or_are_refused(tmp_path):
    doc = yaml.safe_load(SHIPPED["fees.yaml"])
    del doc["withdrawals"]
    (tmp_path / "fees.yaml").write_text(yaml.safe_dump(doc))
    try:
        assert withdrawal_fees(load_yaml("fees.yaml", tmp_path)).is_empty()
    except ValueError as exc:
        assert str(exc).startswith(f"{tmp_path / 'fees.yaml'}: ")


@pytest.mark.xfail(strict=True, reason="yaml.safe_load keeps the last of two equal keys: a setting given twice is "
                                       "read silently, not refused (sofia_runtime.config refuses it)")
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_a_config_key_given_twice_is_an_error_naming_it(tmp_path, name):
    first_key = next(line.split(":")[0] for line in SHIPPED[name].decode().splitlines()
                     if line and line[0].isalpha())
    # the same value again: only a check for repeated keys can refuse it
    again = json.dumps(yaml.safe_load(SHIPPED[name])[first_key], default=str)
    _config_error(tmp_path, name, SHIPPED[name] + f"\n{first_key}: {again}\n".encode())
