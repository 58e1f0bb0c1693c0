"""Every configuration file validated by its model: a bad value is an error naming the file, the field and the value;
the shipped files load exactly as they read."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sofia_pipelines.defs.anomaly.compute import load_config as load_anomaly_config
from sofia_pipelines.defs.fees import assets, compute
from sofia_pipelines.defs.fees.compute import CONFIG_DIR, fee_table, load_yaml, markets_frame, withdrawal_fees
from sofia_pipelines.defs.slo.compute import CONFIG_PATH as SLO_PATH
from sofia_pipelines.defs.slo.compute import load_slo_config
from sofia_pipelines.warehouse import read_window
from sofia_runtime.schemas import FEE_TABLE
from sofia_runtime.tax import rules_from_config

MODELLED = ("fees.yaml", "tax_rules.yaml", "markets.yaml", "inventory.yaml")


def _shipped(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


def _write(folder: Path, name: str, doc) -> Path:
    (folder / name).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return folder


def _error(tmp_path, name: str, edit) -> str:
    """The error of loading the shipped `name` after `edit`, written as YAML where a loader reads it."""
    raw = copy.deepcopy(_shipped(name))
    edit(raw)
    with pytest.raises(ValueError) as err:
        load_yaml(name, _write(tmp_path, name, raw))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / name}: "), message
    assert "Traceback" not in message
    return message


def _set(path: tuple, value):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _drop(path: tuple):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _as_read(loaded, shipped):
    """`loaded` holds every value of `shipped` unchanged, and None for each optional field the file leaves out."""
    if isinstance(shipped, dict):
        assert set(shipped) <= set(loaded), sorted(set(shipped) - set(loaded))
        assert all(loaded[k] is None for k in set(loaded) - set(shipped)), loaded
        for k, v in shipped.items():
            _as_read(loaded[k], v)
    elif isinstance(shipped, list):
        assert len(loaded) == len(shipped)
        for a, b in zip(loaded, shipped):
            _as_read(a, b)
    else:
        assert loaded == shipped and type(loaded) in (type(shipped), float), (loaded, shipped)


@pytest.mark.parametrize("name", MODELLED)
def test_shipped_files_load_as_they_read(name):
    _as_read(load_yaml(name), _shipped(name))


def test_shipped_files_build_what_they_built():
    fees = load_yaml("fees.yaml")
    assert fee_table(markets_frame(load_yaml("markets.yaml")), fees, {}).height > 38
    assert withdrawal_fees(fees).height == len(_shipped("fees.yaml")["withdrawals"])
    assert [r.rule_id for r in rules_from_config(load_yaml("tax_rules.yaml"))] == [
        r["rule_id"] for r in _shipped("tax_rules.yaml")["rules"]]
    assert load_slo_config().slos.availability.target == 0.995


TIER = ("trading", 0, "tiers", 0)


@pytest.mark.parametrize("edit, message", [
    (_drop((*TIER, "taker")), "field 'trading[0].tiers[0].taker': Field required"),
    (_set((*TIER, "maker"), "ten bps"), "field 'trading[0].tiers[0].maker': Input should be a valid number, unable to "
                                        "parse string as a number (got 'ten bps')"),
    (_set((*TIER, "maker"), -0.5), "field 'trading[0].tiers[0].maker': Input should be greater than or equal to -0.01 "
                                   "(got -0.5)"),
    (_set((*TIER, "maker"), 5.0), "field 'trading[0].tiers[0].maker': Input should be less than or equal to 0.05 "
                                  "(got 5.0)"),
    (_set((*TIER, "taker"), float("nan")), "field 'trading[0].tiers[0].taker': Input should be a finite number"),
    (_set((*TIER, "taekr"), 0.001), "field 'trading[0].tiers[0].taekr': Extra inputs are not permitted (got 0.001)"),
    (_set((*TIER, "min_volume_30d_usd"), -1), "field 'trading[0].tiers[0].min_volume_30d_usd': Input should be "
                                              "greater than or equal to 0 (got -1)"),
    (_set(("trading", 0, "tiers"), []), "field 'trading[0].tiers': List should have at least 1 item"),
    (_set(("trading", 0, "tiers", 1, "tier"), "VIP0"), "field 'trading[0].tiers': tier names repeat"),
    (_set((*TIER, "min_volume_30d_usd"), 100), "field 'trading[0].tiers': no tier starts at min_volume_30d_usd 0"),
    (_set(("trading", 0, "valid_from"), "not-a-date"), "field 'trading[0].valid_from': Input should be a valid date "
                                                       "or datetime"),
    (_set(("trading", 0, "valid_from"), 20240101), "field 'trading[0].valid_from': should be a date YYYY-MM-DD, not a "
                                                   "number (got 20240101)"),
    (_set(("trading", 1, "valid_to"), "2023-06-01"), "field 'trading[1]': valid_to (2023-06-01) must be after "
                                                     "valid_from (2024-01-01)"),
    (_set(("trading", 2, "market"), "futures"), "field 'trading[2].market': Input should be 'spot' or 'perp' "
                                                "(got 'futures')"),
    (_set(("trading", 1, "funding_interval_hours"), 0), "field 'trading[1].funding_interval_hours': Input should be "
                                                        "greater than 0 (got 0)"),
    (_drop(("trading", 0, "source")), "field 'trading[0].source': Field required"),
    (_set(("withdrawals", 2, "fee"), -0.0002), "field 'withdrawals[2].fee': Input should be greater than or equal to "
                                               "0 (got -0.0002)"),
    (_set(("withdrawals", 2, "fee"), "free"), "field 'withdrawals[2].fee': Input should be a valid number"),
    (lambda raw: raw["withdrawals"].append({**raw["withdrawals"][0], "fee": 2.0}),
     "field 'withdrawals': more than one fee for ['binance USDT TRC20']"),
    (_drop(("default", "taker")), "field 'default.taker': Field required"),
    (_set(("default", "maker"), 0.5), "field 'default.maker': Input should be less than or equal to 0.05 (got 0.5)"),
    (_set(("desk_volume_30d_usd",), "a lot"), "field 'desk_volume_30d_usd': Input should be a valid number"),
    (_set(("checked",), "recently"), "field 'checked': Input should be a valid date or datetime"),
])
def test_bad_fees_name_the_file_and_field(tmp_path, edit, message):
    assert message in _error(tmp_path, "fees.yaml", edit)


def test_overlapping_fee_periods_are_refused_on_load(tmp_path):
    def overlap(raw):
        old = raw["trading"][0]
        raw["trading"][0] = {**old, "valid_to": "2026-06-01"}
        raw["trading"].append({**old, "valid_from": "2026-03-01", "source": "page of 2026"})

    assert "field 'trading': trading fees for binance spot overlap: the period from 2024-01-01 runs to 2026-06-01, " \
           "the next starts 2026-03-01" in _error(tmp_path, "fees.yaml", overlap)

    def same_start(raw):
        raw["trading"].append({**raw["trading"][0], "source": "a second copy"})

    assert "trading fees for binance spot overlap" in _error(tmp_path, "fees.yaml", same_start)


def test_every_bad_field_is_named_at_once(tmp_path):
    def two(raw):
        raw["trading"][0]["tiers"][0]["maker"] = 5.0
        raw["withdrawals"][0]["fee"] = -1

    message = _error(tmp_path, "fees.yaml", two)
    assert "field 'trading[0].tiers[0].maker'" in message and "field 'withdrawals[0].fee'" in message


RULE = ("rules", 0)


@pytest.mark.parametrize("edit, message", [
    (_set((*RULE, "rate"), 25), "field 'rules[0].rate': Input should be less than or equal to 1 (got 25)"),
    (_set((*RULE, "rate"), -0.1), "field 'rules[0].rate': Input should be greater than or equal to 0 (got -0.1)"),
    (_set((*RULE, "rate"), "25 %"), "field 'rules[0].rate': Input should be a valid number, unable to parse string "
                                    "as a number (got '25 %')"),
    (_set((*RULE, "kind"), "vat"), "field 'rules[0].kind': Input should be 'corporate_income_tax', "
                                   "'corporate_income_tax_financial', 'minimum_tax', 'transaction_tax' or "
                                   "'withholding' (got 'vat')"),
    (_set((*RULE, "status"), "draft"), "field 'rules[0].status': Input should be 'enacted' or 'proposed' "
                                       "(got 'draft')"),
    (_set((*RULE, "valid_from"), "not-a-date"), "field 'rules[0].valid_from': Input should be a valid date or "
                                                "datetime, invalid character in year (got 'not-a-date')"),
    (_set((*RULE, "valid_to"), "2022-12-31"), "field 'rules[0]': valid_to (2022-12-31) must be after valid_from "
                                              "(2023-01-01)"),
    (_drop((*RULE, "rule_id")), "field 'rules[0].rule_id': Field required"),
    (_set(("rules", 1, "rule_id"), "cit_general"), "field 'rules': rule_id and valid_from repeat: "
                                                   "['cit_general from 2023-01-01']"),
    (_set(("proposed_rules",), {"enabled": True}), "field 'proposed_rules': enabled needs a start date"),
    (_set(("proposed_rules", "start"), "soon"), "field 'proposed_rules.start': Input should be a valid date"),
    (_drop(("rules",)), "field 'rules': Field required"),
])
def test_bad_tax_rules_name_the_file_and_field(tmp_path, edit, message):
    assert message in _error(tmp_path, "tax_rules.yaml", edit)


MARKET = ("markets", 0)


@pytest.mark.parametrize("edit, message", [
    (_set((*MARKET, "price_tick"), 0), "field 'markets[0].price_tick': Input should be greater than 0 (got 0)"),
    (_set((*MARKET, "amount_step"), -1e-05), "field 'markets[0].amount_step': Input should be greater than 0 "
                                             "(got -1e-05)"),
    (_set((*MARKET, "price_tick"), "a cent"), "field 'markets[0].price_tick': Input should be a valid number"),
    (_set((*MARKET, "min_amount"), -1), "field 'markets[0].min_amount': Input should be greater than or equal to 0"),
    (_set((*MARKET, "min_notional"), -5), "field 'markets[0].min_notional': Input should be greater than or equal "
                                          "to 0 (got -5)"),
    (_drop((*MARKET, "symbol")), "field 'markets[0].symbol': Field required"),
    (lambda raw: raw["markets"].append({**raw["markets"][0], "price_tick": 0.1}),
     "field 'markets': more than one row for ['binance BTC/USDT']"),
    (_set((*MARKET, "market"), "swap"), "field 'markets[0].market': Input should be 'spot' or 'perp' (got 'swap')"),
])
def test_bad_markets_name_the_file_and_field(tmp_path, edit, message):
    assert message in _error(tmp_path, "markets.yaml", edit)


@pytest.mark.parametrize("edit, message", [
    (_set(("balances", "okx", "BTC"), -1.0), "field 'balances.okx.BTC': Input should be greater than or equal to 0 "
                                             "(got -1.0)"),
    (_set(("balances", "okx", "BTC"), "one"), "field 'balances.okx.BTC': Input should be a valid number"),
    (_set(("min_share",), 1.5), "field 'min_share': Input should be less than or equal to 1 (got 1.5)"),
    (_set(("tolerance",), -0.15), "field 'tolerance': Input should be greater than or equal to 0 (got -0.15)"),
    (_set(("tolerance",), 2), "field 'tolerance': Input should be less than or equal to 1 (got 2)"),
    (_drop(("balances",)), "field 'balances': Field required"),
])
def test_bad_inventory_names_the_file_and_field(tmp_path, edit, message):
    assert message in _error(tmp_path, "inventory.yaml", edit)


def test_bad_slo_values_name_the_file_and_field(tmp_path):
    raw = yaml.safe_load(SLO_PATH.read_text())
    raw["slos"]["ack_latency"]["threshold_ms"] = float("inf")
    raw["defaults"]["window_days"] = -28
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as err:
        load_slo_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert "field 'slos.ack_latency.threshold_ms': Input should be a finite number (got inf)" in message
    assert "field 'defaults.window_days': Input should be greater than 0 (got -28)" in message


def test_optional_fields_left_out_load(tmp_path):
    markets = _shipped("markets.yaml")
    for field in ("min_notional", "source"):
        del markets["markets"][0][field]
    frame = markets_frame(load_yaml("markets.yaml", _write(tmp_path, "markets.yaml", markets)))
    assert frame.height == len(markets["markets"]) and frame.row(0, named=True)["min_notional"] is None

    fees = _shipped("fees.yaml")
    del fees["withdrawals"], fees["default"]
    loaded = load_yaml("fees.yaml", _write(tmp_path, "fees.yaml", fees))
    assert withdrawal_fees(loaded).is_empty() and loaded["default"] is None

    fees = _shipped("fees.yaml")
    fees["withdrawals"][0]["valid_from"] = fees["checked"].replace(year=2025)
    table = withdrawal_fees(load_yaml("fees.yaml", _write(tmp_path, "fees.yaml", fees)))
    assert table["valid_from"].to_list() == [date(2025, 11, 1)] + [fees["checked"]] * (table.height - 1)


@pytest.mark.parametrize("name", (*MODELLED, "risk.yaml", "anomaly.yaml", "slo.yaml"))
@pytest.mark.parametrize("text, message", [
    (None, "not valid YAML: setting '{key}' given twice"),
    (b"\xff\xfe", "not UTF-8 text"),
    (b"[" * 100_000, "not valid YAML: nested too deeply"),
    (b"rules: [unclosed", "not valid YAML"),
])
def test_a_file_that_is_not_yaml_is_named(tmp_path, name, text, message):
    shipped = (CONFIG_DIR / name).read_bytes()
    key = next(iter(yaml.safe_load(shipped)))
    if text is None:  # the first setting again, with the same value: only a check for repeated keys refuses it
        text = shipped + f"\n{key}: {json.dumps(yaml.safe_load(shipped)[key], default=str)}\n".encode()
    elif text == b"\xff\xfe":
        text += shipped
    (tmp_path / name).write_bytes(text)
    with pytest.raises(ValueError) as err:
        LOADERS[name](tmp_path / name)
    assert str(err.value).startswith(f"{tmp_path / name}: {message.format(key=key)}"), err.value


LOADERS = {**{name: (lambda path: load_yaml(path.name, path.parent)) for name in (*MODELLED, "risk.yaml")},
           "anomaly.yaml": load_anomaly_config, "slo.yaml": load_slo_config}


@pytest.mark.parametrize("name", MODELLED)
def test_a_missing_or_empty_file_is_named(tmp_path, name):
    with pytest.raises(ValueError, match=f"{tmp_path / name}: cannot read: No such file"):
        load_yaml(name, tmp_path)
    (tmp_path / name).write_text("# nothing yet\n")
    with pytest.raises(ValueError, match=f"{tmp_path / name}: field '.+': Field required"):
        load_yaml(name, tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path / 'slo.yaml'}: cannot read"):
        load_slo_config(tmp_path / "slo.yaml")


def test_a_bad_fees_file_stops_the_fee_assets_and_keeps_the_stored_table(tmp_path, resources, monkeypatch):
    fee_assets = [assets.markets, assets.fee_table_asset]
    assert dg.materialize(fee_assets, resources=resources).success
    with resources["warehouse"].get_connection() as conn:
        stored = read_window(conn, "analytics", FEE_TABLE)

    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    raw = _shipped("fees.yaml")
    raw["trading"][0]["tiers"][0]["taker"] = 0.5
    _write(config, "fees.yaml", raw)
    monkeypatch.setattr(compute, "CONFIG_DIR", config)
    result = dg.materialize(fee_assets, resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert (f"{config / 'fees.yaml'}: field 'trading[0].tiers[0].taker': Input should be less than or equal to 0.05 "
            "(got 0.5)") in failure.event_specific_data.error.cause.message
    with resources["warehouse"].get_connection() as conn:
        assert read_window(conn, "analytics", FEE_TABLE).equals(stored)


def test_a_bad_proposed_start_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("SOFIA_TAX_PROPOSED_START", "next year")
    with pytest.raises(ValueError, match="SOFIA_TAX_PROPOSED_START: 'next year' is not a date YYYY-MM-DD"):
        rules_from_config(load_yaml("tax_rules.yaml"))
    monkeypatch.setenv("SOFIA_TAX_PROPOSED_START", "2027-01-01")
    assert all(r.enabled for r in rules_from_config(load_yaml("tax_rules.yaml")))
