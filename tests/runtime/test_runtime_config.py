"""Configuration: live trading refused for each missing condition (through the real CLI), API keys never
echoed, precedence file < env < flags, and wrong values named by field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from runtime_support import RuntimeData
from fake_binance import running_fake_binance
from sofia_runtime.config import load_config
from sofia_runtime.runner import RefusedToStart, check_can_start

KEY, SECRET = "KEY-live-5e1f0c9a7b", "SECRET-live-0d3c55aa91e4"
KEYS = {"SOFIA_BINANCE_API_KEY": KEY, "SOFIA_BINANCE_SECRET": SECRET}
ROUTER = ["run", "--strategy", "router", "--order", "buy 0.002 BTC/USDT", "--port", "0", "--duration", "20s"]


def write_config(data: Path, **values) -> Path:
    path = data / "runtime.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def assert_no_keys(*texts: str) -> None:
    for text in texts:
        assert KEY not in text and SECRET not in text


# --- live refused, one missing condition at a time (the real CLI) ---------------------------------------------

REFUSALS = {
    # name: (flags after ROUTER, allow_live in runtime.yaml, env keys, the sentence that must be named)
    "allow_live false": (["--mode", "live", "--venue", "binance"], False, KEYS,
                         "allow_live is false in the configuration"),
    "no api key": (["--mode", "live", "--venue", "binance"], True, {"SOFIA_BINANCE_SECRET": SECRET},
                   "SOFIA_BINANCE_API_KEY is not set"),
    "no secret": (["--mode", "live", "--venue", "binance"], True, {"SOFIA_BINANCE_API_KEY": KEY},
                  "SOFIA_BINANCE_SECRET is not set"),
    "no venue": (["--mode", "live"], True, KEYS, "--venue is not given"),
}


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_live_is_refused_naming_the_missing_condition(runtime_data: RuntimeData, case):
    flags, allow_live, keys, sentence = REFUSALS[case]
    write_config(runtime_data.dir, allow_live=allow_live)
    proc = runtime_data.cli(*ROUTER, *flags, env=runtime_data.env(**keys))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("sofia-runtime: live trading refused: ")
    reasons = proc.stderr.removeprefix("sofia-runtime: live trading refused: ").strip().split("; ")
    assert reasons[0].startswith(sentence) and len(reasons) == 1, reasons  # that condition, and only that one
    assert proc.stdout == ""
    assert not (runtime_data.dir / "audit").exists()  # refused before the journal or the lock
    assert_no_keys(proc.stdout, proc.stderr)


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("where", ["file", "env"])
def test_mode_live_from_the_configuration_alone_is_refused(runtime_data: RuntimeData, where):
    """Live needs `--mode live` on the command line: `mode: live` in runtime.yaml or SOFIA_RUNTIME_MODE is not
    enough, however complete the rest is."""
    with running_fake_binance(KEY, SECRET) as fake:
        values = {"allow_live": True, "venue_urls": {"binance": fake.base_url}}
        env = runtime_data.env(**KEYS)
        if where == "file":
            values["mode"] = "live"
        else:
            env["SOFIA_RUNTIME_MODE"] = "live"
        write_config(runtime_data.dir, **values)
        proc = runtime_data.cli(*ROUTER, "--venue", "binance", env=env)
        assert fake.requests == []
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("sofia-runtime: live trading refused: --mode live is not on the command line")
    assert_no_keys(proc.stdout, proc.stderr)
    assert not (runtime_data.dir / "audit").exists()


@pytest.mark.slow  # a real process
def test_every_missing_condition_is_named_at_once(runtime_data: RuntimeData):
    proc = runtime_data.cli(*ROUTER, "--mode", "live", "--venue", "binance")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("sofia-runtime: live trading refused: allow_live is false in the configuration; "
                                   "SOFIA_BINANCE_API_KEY is not set; SOFIA_BINANCE_SECRET is not set")


@pytest.mark.slow  # a real process
def test_mm_lite_refuses_live_even_with_everything_in_place(runtime_data: RuntimeData):
    write_config(runtime_data.dir, allow_live=True)
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--mode", "live", "--venue", "binance", "--port", "0",
                            env=runtime_data.env(**KEYS))
    assert proc.returncode == 2
    assert "mm_lite is a paper-only strategy" in proc.stderr and "--mode paper" in proc.stderr
    assert_no_keys(proc.stdout, proc.stderr)
    assert not (runtime_data.dir / "audit").exists()


@pytest.mark.slow  # a real process
def test_without_mode_live_nothing_goes_to_the_live_venue(runtime_data: RuntimeData):
    """allow_live, keys and a venue URL in place, but no --mode live: the runtime trades paper and never calls the
    venue; the keys in its environment appear nowhere in its output or its journal."""
    with running_fake_binance(KEY, SECRET) as fake:
        write_config(runtime_data.dir, allow_live=True, venue_urls={"binance": fake.base_url})
        proc = runtime_data.cli(*ROUTER, "--venue", "binance", "--speed", "0", env=runtime_data.env(**KEYS))
        assert proc.returncode == 0, proc.stderr
        assert fake.requests == []
    records = runtime_data.records("router-paper")
    start = records[0]["payload"]
    assert (records[0]["kind"], start["mode"], start["config"]["allow_live"]) == ("start", "paper", True)
    fills = [r["payload"] for r in records if r["kind"] == "fill"]
    assert sum(float(f["amount"]) for f in fills) == pytest.approx(0.002) and {f["venue"] for f in fills} == {"binance"}
    assert records[-1]["kind"] == "stop" and records[-1]["payload"]["reason"] == "strategy done"
    journal = "".join(p.read_text() for p in (runtime_data.dir / "audit").rglob("*.jsonl"))
    assert_no_keys(proc.stdout, proc.stderr, journal)
    assert (runtime_data.dir / "paper_venue" / "router-paper" / "binance.jsonl").exists()


def test_check_can_start_in_process():
    cfg = load_config(None, strategy="router", mode="live", venue="binance", allow_live=True)
    check_can_start(cfg, env=KEYS)  # everything in place: no exception
    check_can_start(load_config(None, strategy="router", venue="binance"), env={})  # paper needs nothing
    with pytest.raises(RefusedToStart) as err:
        check_can_start(load_config(None, strategy="router", mode="live", venue="binance"), env=KEYS)
    assert str(err.value) == "live trading refused: allow_live is false in the configuration"
    # websocket-only market data on a venue ccxt streams nothing for (btcturk: REST only) is refused up front
    with pytest.raises(RefusedToStart) as err:
        check_can_start(load_config(None, strategy="router", mode="live", venue="btcturk", allow_live=True,
                                    market_data="websocket"), env={"SOFIA_BTCTURK_API_KEY": "k",
                                                                   "SOFIA_BTCTURK_SECRET": "s"})
    assert str(err.value) == ("live trading refused: market_data is websocket but ccxt has no websocket order book "
                              "stream for btcturk")
    check_can_start(load_config(None, strategy="router", mode="live", venue="binance", allow_live=True,
                                market_data="websocket"), env=KEYS)


# --- configuration: precedence and errors ------------------------------------------------------------------------


def test_precedence_file_then_env_then_flags(runtime_data: RuntimeData, monkeypatch):
    path = write_config(runtime_data.dir, speed=10, port=1234,
                        duration_s=50, strategy="funding_farmer",
                        gate={"threshold_usd": 0.5, "horizon_s": 10}, mm_lite={"quote_usd": 500})
    monkeypatch.setenv("SOFIA_RUNTIME_SPEED", "20")
    monkeypatch.setenv("SOFIA_RUNTIME_DURATION_S", "70")
    monkeypatch.setenv("SOFIA_RUNTIME_GATE__THRESHOLD_USD", "0.7")
    cfg = load_config(path, speed=30.0, port=None, venue=None)  # unset flags (None) do not mask the file
    assert cfg.speed == 30.0  # flag over env over file
    assert cfg.duration_s == 70.0  # env over file
    assert cfg.port == 1234 and cfg.strategy == "funding_farmer"  # file over default
    assert (cfg.gate.threshold_usd, cfg.gate.horizon_s) == (0.7, 10.0)  # nested: env and file merge field by field
    assert (cfg.gate.miss_cost_bps, cfg.mm_lite.quote_usd, cfg.mm_lite.requote_s) == (0.5, 500.0, 30.0)
    # without --config, <data>/runtime.yaml is read when present
    assert load_config(None).port == 1234
    (runtime_data.dir / "runtime.yaml").unlink()
    assert load_config(None).port == 8000 and load_config(None).speed == 20.0


def test_a_missing_config_file_is_an_error(runtime_data: RuntimeData):
    with pytest.raises(FileNotFoundError, match="nope.yaml does not exist"):
        load_config(runtime_data.dir / "nope.yaml")


@pytest.mark.parametrize("values, field, message", [
    ({"speed": -1}, "speed", "greater than or equal to 0"),
    ({"gate": {"horizon_s": 0}}, "gate.horizon_s", "greater than 0"),
    ({"strategy": "momentum"}, "strategy", "'mm_lite', 'funding_farmer' or 'router'"),
    ({"pause_poll_s": 5}, "pause_poll_s", "less than or equal to 1"),
    ({"runtime_id": "../escape"}, "runtime_id", "must be a plain file name"),
    ({"spede": 3}, "spede", "Extra inputs are not permitted"),
    ({"limits": {"max_open_orders_total": "many"}}, "limits.max_open_orders_total", "valid integer"),
])
def test_a_wrong_value_names_the_field(runtime_data: RuntimeData, values, field, message):
    path = write_config(runtime_data.dir, **values)
    with pytest.raises(ValidationError) as err:
        load_config(path)
    (error,) = err.value.errors()
    assert ".".join(str(x) for x in error["loc"]) == field
    assert message in str(err.value)


@pytest.mark.slow  # a real process
def test_a_wrong_value_through_the_cli_exits_2_naming_the_field(runtime_data: RuntimeData):
    write_config(runtime_data.dir, gate={"horizon_s": -5})
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--port", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("sofia-runtime: 1 validation error for RuntimeConfig")
    assert "gate.horizon_s" in proc.stderr and "greater than 0" in proc.stderr
    env_bad = runtime_data.cli("run", "--strategy", "mm_lite", "--port", "0",
                               env=runtime_data.env(SOFIA_RUNTIME_SPEED="fast"))
    assert env_bad.returncode == 2 and "speed" in env_bad.stderr and "valid number" in env_bad.stderr
    assert not (runtime_data.dir / "audit").exists()
