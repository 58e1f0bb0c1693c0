"""The drill's scenarios: the faults each injects, how long they stay armed, and where the runtime's breaker must
pause."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: dict = field(default_factory=dict)  # ChaosConfig fields for FaultyVenue
    proxy: dict | None = None  # live mode: chaos_proxy.ProxyFaults fields instead of `faults`
    burst: float = 0.4  # fraction of the duration the faults stay armed
    until_pause_within: float | None = None  # when a pause is expected: armed until it comes, at most this fraction
    expect_pause_for: frozenset[str] = frozenset()  # strategies for which the breaker must pause
    pause_why: str = ""
    modes: tuple[str, ...] = ("paper", "live")
    kill: bool = False
    stale: bool = False

    def expects_pause(self, strategy: str) -> bool:
        return strategy in self.expect_pause_for


_NO_PAUSE_RETRIES = ("an order goes unknown only when its send and all three look-ups by client id fail "
                     "(0.2^4 = 0.16 %), and the breaker needs 5 order/cancel calls failing in a row")

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("latency", "every venue call 20 ± 15 ms slower", {"latency_ms": 20.0, "jitter_ms": 15.0},
             proxy={"latency_ms": 20.0, "jitter_ms": 15.0}, pause_why="slower calls, none fails"),
    Scenario("timeouts", "20 % of venue calls time out before reaching the venue", {"timeout_rate": 0.2},
             pause_why=_NO_PAUSE_RETRIES),
    Scenario("http_5xx", "a burst of HTTP 503 on every venue call until the breaker trips", {"error_5xx_rate": 1.0},
             proxy={"error_rate": 1.0, "error_status": 503}, burst=0.3, until_pause_within=0.6,
             expect_pause_for=frozenset({"mm_lite"}),
             pause_why="every call fails: mm_lite keeps requoting, so 5 order/cancel calls fail in a row within a "
                       "second; router has one child in flight (the unknown child holds the next back) and "
                       "funding_farmer retries a failed pair only after reconsider_s, so they never reach 5"),
    Scenario("dropped_after_send", "20 % of calls (live: every POST/DELETE) processed, then the connection drops",
             {"drop_after_send_rate": 0.2}, proxy={"drop_after_send_rate": 1.0, "match": r"^(POST|DELETE) "},
             pause_why="the look-up by client id finds the order, so the send counts as a success"),
    Scenario("rate_limits", "20 % of venue calls answered 429, not processed", {"rate_limit_rate": 0.2},
             proxy={"error_rate": 0.2, "error_status": 429}, pause_why=_NO_PAUSE_RETRIES),
    Scenario("stale_data", "one venue's books and trades stop for a stretch of market time", stale=True,
             modes=("paper",), pause_why="stale data blocks orders on that book; it never pauses"),
    Scenario("kill_restart", "SIGKILL mid-run, restart with the same runtime id", kill=True,
             pause_why="a crash is not a venue error"),
    Scenario("refused", "the venue refuses connections for a while (live, at the proxy)", proxy={"refuse": True},
             burst=0.3, modes=("live",),
             pause_why="market-data polls fail (health 503) and at most the router's one child goes unknown"),
)}


def scenarios_for(name: str, mode: str) -> list[Scenario]:
    if name == "all":
        return [s for s in SCENARIOS.values() if mode in s.modes]
    if name not in SCENARIOS:
        raise ValueError(f"--scenario {name!r}: choose one of {', '.join(SCENARIOS)} or all")
    scenario = SCENARIOS[name]
    if mode not in scenario.modes:
        raise ValueError(f"--scenario {name} runs in {'/'.join(scenario.modes)} mode only, not {mode}")
    return [scenario]


def stale_window(duration_s: float, speed: float, stale_after_s: float) -> tuple[float, float]:
    """(stale_from_s, stale_for_s) in market seconds: from 15 % into the run for 30 % of it at `speed`, so the data
    is back before half the run even when the replay falls behind its pace (a busy machine, every order sent) and
    there is time left to quote on it again; at full speed (0) the pace is unknown, so 2 market minutes in for 10
    minutes (a replay at full speed covers several market minutes a second)."""
    if speed > 0:
        return 0.15 * duration_s * speed, max(0.3 * duration_s * speed, 3 * stale_after_s)
    return 120.0, max(600.0, 3 * stale_after_s)
