"""`sofia-runtime chaos`, the drill, a parent process: for each scenario it writes a configuration of its own (the
user's, the scenario's `chaos` section and the drill's order flow), runs `python -m sofia_runtime.cli run` in
paper mode (or live, through `chaos_proxy`) as a real subprocess on the CURRENT snapshot with runtime id
`chaos-<scenario>-<stamp>`, arms the faults once the runtime has an order acknowledged, disarms them after the
burst, and stops at the duration. Where the scenario expects the breaker's pause, the drill resumes (clears the
pause file) as soon as the faults stop, so the next scenario and the rest of this one trade unpaused. The
verdicts (`verdict.judge`) go to a rich table per scenario, a summary, and `<data>/reports/chaos-<stamp>.json`;
the command exits 1 when any verdict fails.

The pause file `<data>/control/pause.json` is shared by every runtime of the data folder, so the drill refuses to
run while another runtime is running there or the folder is already paused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sofia_runtime import liveness
from sofia_runtime.chaos import order_flow
from sofia_runtime.chaos.inject import CONTROL_ENV, read_fault_log
from sofia_runtime.chaos.scenarios import Scenario, scenarios_for, stale_window
from sofia_runtime.chaos.verdict import Verdict, _epoch, judge, live_venue_record, print_verdicts



class JournalTail:
    """New complete records of one runtime's journal files since the last poll."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.offsets: dict[Path, int] = {}

    def poll(self) -> list[dict]:
        out = []
        for path in sorted(self.dir.glob("*.jsonl")):
            offset = self.offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut:
                self.offsets[path] = offset + cut
                out += [json.loads(line) for line in data[:cut].splitlines() if line.strip()]
        return out


class DrillError(RuntimeError):
    """The drill cannot run (bad arguments, a runtime that refuses to start, a paused or busy data folder)."""


@dataclass
class DrillOptions:
    scenario: str = "all"
    duration_s: float = 20.0
    strategy: str | None = None
    speed: float | None = None
    mode: str = "paper"
    venue: str | None = None
    venue_url: str | None = None
    order: str | None = None
    config: Path | None = None
    seed: int = 0


class _Proc:
    """A `sofia-runtime run` subprocess with its output in files."""

    def __init__(self, args: list[str], env: dict, out_dir: Path, n: int):
        self.out, self.err = out_dir / f"run-{n}.out", out_dir / f"run-{n}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "sofia_runtime.cli", "run", *args], stdout=out, stderr=err, env=env)

    def poll(self):
        return self.popen.poll()

    def stderr_tail(self, n: int = 1500) -> str:
        return self.err.read_text()[-n:] if self.err.exists() else ""


class Drill:
    def __init__(self, opts: DrillOptions, announce=print):
        from sofia_runtime import paths

        self.opts, self.announce = opts, announce
        self.data = paths.data_dir()
        self.pause_path = paths.pause_file()
        if opts.duration_s < 1.0:
            raise DrillError(f"--duration {opts.duration_s:g} s is too short for a burst and a recovery (>= 1 s)")
        if opts.mode not in ("paper", "live"):
            raise DrillError(f"--mode {opts.mode!r}: paper or live")
        self.strategy = opts.strategy or ("mm_lite" if opts.mode == "paper" else "router")
        try:
            self.scenarios = scenarios_for(opts.scenario, opts.mode)
        except ValueError as exc:
            raise DrillError(str(exc)) from None
        if opts.mode == "live":
            if self.strategy == "mm_lite":
                raise DrillError("mm_lite is paper-only; a live drill needs --strategy router --order \"buy ...\"")
            if not opts.venue or not opts.venue_url:
                raise DrillError("--mode live needs --venue (the ccxt id) and --venue-url (the venue's http URL the "
                                 "chaos proxy relays to)")
            from sofia_runtime.chaos_proxy import parse_upstream
            try:
                parse_upstream(opts.venue_url)
            except ValueError as exc:
                raise DrillError(str(exc)) from None
        if self.strategy == "router" and not opts.order:
            raise DrillError('the router needs --order, e.g. --order "buy 0.01 BTC/USDT"')
        self.base_config = self._base_config()
        self.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.order_flow = self._order_flow()

    def _order_flow(self) -> dict:
        """What the drill lays over the user's configuration so orders flow, for its configurations and report."""
        from sofia_runtime import paths
        from sofia_runtime.config import load_config
        from sofia_runtime.snapshot import SnapshotError, current_id

        path = self.opts.config or (self.data / "runtime.yaml")
        try:
            user = load_config(self.opts.config, strategy=self.strategy, mode=self.opts.mode, venue=self.opts.venue)
        except Exception as exc:  # pydantic's message names the field
            raise DrillError(f"your configuration {path} is invalid: {exc}") from None
        if self.opts.mode == "live":
            return {"overrides": {}, "why": f"live: the router's parent order {self.opts.order!r} under the gate as "
                                             f"configured", "user_config": str(path) if path.exists() else None}
        try:
            snapshot = paths.serving_dir() / current_id(paths.serving_dir())
            sections = order_flow.overrides(self.opts.mode, self.strategy, snapshot, user,
                                            self.opts.venue or self._first_venue())
        except (SnapshotError, OSError) as exc:
            raise DrillError(f"cannot set the drill's order flow from the CURRENT snapshot: {exc}") from None
        why = order_flow.WHY
        if "mm_lite" in sections:
            why += (f"; mm_lite quotes {', '.join(sections['mm_lite']['symbols'])}: two quotes per venue within half "
                    f"of limits.max_open_orders_total {user.limits.max_open_orders_total}")
        return {"overrides": sections, "why": why, "user_config": str(path) if path.exists() else None,
                "drill_configs": str(self.data / "chaos" / f"chaos-<scenario>-{self.stamp}" / "runtime.yaml"),
                "environment_ignored": order_flow.environment_overrides(sections)}

    def describe_order_flow(self) -> str:
        flow = self.order_flow
        where = (f"; written to the drill's own {flow['drill_configs']}, your configuration "
                 f"{flow['user_config'] or '(none)'} is not changed" if flow["overrides"] else "")
        ignored = flow.get("environment_ignored")
        return f"order flow: {flow['why']}{where}" + (f"; ignored for the drill: {', '.join(ignored)}" if ignored
                                                      else "")

    def _base_config(self) -> dict:
        import yaml

        path = self.opts.config or (self.data / "runtime.yaml")
        if self.opts.config is not None and not path.exists():
            raise DrillError(f"configuration file {path} does not exist")
        if not path.exists():
            return {}
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise DrillError(f"{path}: the configuration must be a mapping, got {type(loaded).__name__}")
        # a drill runs one plain runtime per scenario: not a blue-green slot, its own ids and faults
        return {k: v for k, v in loaded.items() if k not in ("chaos", "slot", "deployment", "runtime_id")}

    # --- one scenario ---------------------------------------------------------------------------------------
    def _write_config(self, scenario: Scenario, rid: str, workdir: Path, proxy_url: str | None):
        import yaml

        from sofia_runtime.config import load_config

        chaos = {"scenario": scenario.name, "seed": self.opts.seed}
        if not (self.opts.mode == "live" and scenario.proxy is not None):
            chaos.update(scenario.faults)
        cfg = order_flow.apply(self.base_config, self.order_flow["overrides"])
        if proxy_url is not None:
            cfg["venue_urls"] = {**(cfg.get("venue_urls") or {}), self.opts.venue: proxy_url}
        path = workdir / "runtime.yaml"
        cfg["chaos"] = chaos
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        flags = {"strategy": self.strategy, "mode": self.opts.mode, "venue": self.opts.venue,
                 "speed": self.opts.speed, "duration_s": self.opts.duration_s, "runtime_id": rid}
        try:
            effective = load_config(path, **flags)
        except Exception as exc:  # pydantic's message names the field
            raise DrillError(f"the drill's configuration {path} is invalid: {exc}") from None
        if scenario.stale:
            venue = self.opts.venue or self._first_venue()
            frm, length = stale_window(self.opts.duration_s, effective.speed, effective.limits.stale_after_s)
            cfg["chaos"].update({"stale_venue": venue, "stale_from_s": frm, "stale_for_s": length})
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            effective = load_config(path, **flags)
        if self.opts.mode == "live":
            from sofia_runtime.runner import RefusedToStart, check_can_start
            try:
                check_can_start(effective)
            except RefusedToStart as exc:
                raise DrillError(f"{exc} (the drill never turns live trading on: allow_live must come from your "
                                 f"configuration, the keys from the environment)") from None
        return path, effective

    def _first_venue(self) -> str:
        import polars as pl

        from sofia_runtime import paths
        from sofia_runtime.snapshot import SnapshotError, current_id
        try:
            markets = paths.serving_dir() / current_id(paths.serving_dir()) / "markets.parquet"
            return sorted(pl.read_parquet(markets, columns=["venue"])["venue"].unique())[0]
        except (SnapshotError, OSError, IndexError) as exc:
            raise DrillError(f"cannot pick a venue for stale_data from the CURRENT snapshot: {exc}") from None

    def _run_args(self, rid: str, config: Path, duration_s: float) -> list[str]:
        args = ["--strategy", self.strategy, "--mode", self.opts.mode, "--runtime-id", rid, "--config", str(config),
                "--port", "0", "--duration", f"{duration_s:.3f}s"]
        for flag, value in (("--speed", self.opts.speed), ("--venue", self.opts.venue), ("--order", self.opts.order)):
            if value is not None:
                args += [flag, str(value)]
        return args

    def run_scenario(self, scenario: Scenario, proxy=None) -> Verdict:
        from sofia_runtime import control
        from sofia_runtime.chaos_proxy import NO_FAULTS, ProxyFaults

        rid = f"chaos-{scenario.name}-{self.stamp}"
        workdir = self.data / "chaos" / rid
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "armed").unlink(missing_ok=True)
        config, effective = self._write_config(scenario, rid, workdir, proxy.url if proxy else None)
        env = {**os.environ, "SOFIA_DATA_DIR": str(self.data), CONTROL_ENV: str(workdir), "PYTHONUNBUFFERED": "1"}
        for key in self.order_flow.get("environment_ignored", ()):
            env.pop(key, None)
        D = self.opts.duration_s
        use_proxy = self.opts.mode == "live" and scenario.proxy is not None
        has_faults = bool(scenario.faults) or use_proxy
        verdict = Verdict(scenario.name, rid, self.opts.mode, self.strategy, scenario.summary,
                          auto_pause_expected=scenario.expects_pause(self.strategy))
        proxy_log_from = len(proxy.proxy.fault_log) if use_proxy else 0
        until_pause = scenario.until_pause_within is not None and verdict.auto_pause_expected
        burst = scenario.until_pause_within if until_pause else scenario.burst
        self.announce(f"chaos {scenario.name}: {scenario.summary} - runtime {rid}")

        procs = [_Proc(self._run_args(rid, config, D), env, workdir, 1)]
        tail = JournalTail(self.data / "audit" / rid)
        t0 = time.monotonic()
        started = first_ack = armed = disarmed = None
        breaker_paused = False
        kill_at = restart_seq = None
        last_seq = 0
        deadline = t0 + D + 45.0

        def arm(on: bool) -> None:
            if use_proxy:
                proxy.set_faults(ProxyFaults(**scenario.proxy) if on else NO_FAULTS)
            elif on:
                (workdir / "armed").touch()
            else:
                (workdir / "armed").unlink(missing_ok=True)

        def resume_breaker() -> bool:
            state = control.read_pause(self.pause_path)
            if state.paused and state.paused_by == f"runtime-breaker:{rid}":
                return control.clear_pause(self.pause_path)
            return False

        try:
            while True:
                now = time.monotonic()
                for rec in tail.poll():
                    last_seq = rec["seq"]
                    if rec["kind"] == "start" and started is None:
                        started = now
                    elif rec["kind"] == "order_ack" and first_ack is None:
                        first_ack = now
                    elif rec["kind"] == "pause" and rec["payload"].get("paused_by") == f"runtime-breaker:{rid}":
                        breaker_paused = True
                proc = procs[-1]
                if proc.poll() is not None:
                    if proc.poll() == 2:
                        raise DrillError(f"the runtime refused to start: {proc.stderr_tail()}")
                    break
                if now > deadline:
                    proc.popen.terminate()
                    try:
                        proc.popen.wait(15)
                    except Exception:
                        proc.popen.kill()
                    verdict.failures.append(f"the runtime did not stop within {D + 45:.0f} s")
                    break
                ready = first_ack is not None or (started is not None and now - started > 0.3 * D)
                if has_faults and armed is None and ready and now - (first_ack or started) >= 0.1 * D:
                    arm(True)
                    armed = now
                if armed is not None and disarmed is None and (
                        now - armed >= burst * D or (until_pause and breaker_paused)):
                    arm(False)
                    disarmed = now
                if breaker_paused and (disarmed is not None or not has_faults):
                    verdict.resumed_by_drill |= resume_breaker()
                if scenario.kill and kill_at is None and first_ack is not None and now - first_ack >= 0.4 * D:
                    proc.popen.kill()
                    proc.popen.wait()
                    kill_at = time.time()
                    for rec in tail.poll():
                        last_seq = rec["seq"]
                    restart_seq = last_seq
                    remaining = max(1.0, D - (time.monotonic() - (started or t0)))
                    procs.append(_Proc(self._run_args(rid, config, remaining), env, workdir, 2))
                time.sleep(0.02)
        finally:
            arm(False)
            for proc in procs:
                if proc.poll() is None:
                    proc.popen.kill()
                    proc.popen.wait()
            if breaker_paused or control.read_pause(self.pause_path).paused:
                verdict.resumed_by_drill |= resume_breaker()

        verdict.exit_codes = [p.poll() for p in procs]
        expected_codes = [-9, 0] if scenario.kill else [0]
        if scenario.kill and kill_at is None:
            verdict.failures.append("the runtime ended before the drill could kill it (lengthen --duration)")
        elif verdict.exit_codes != expected_codes:
            verdict.failures.append(f"runtime exit codes {verdict.exit_codes}, expected {expected_codes}: "
                                    f"{procs[-1].stderr_tail(600)}")
        if has_faults and armed is None:
            verdict.notes.append("the faults were never armed: the runtime ended first")
        if control.read_pause(self.pause_path).paused:
            verdict.notes.append(f"the data folder is still paused: {control.read_pause(self.pause_path)}")
        proxy_faults = list(proxy.proxy.fault_log[proxy_log_from:]) if use_proxy else []
        return self._judge(scenario, verdict, workdir, effective, kill_at, restart_seq, proxy_faults)

    def _judge(self, scenario, verdict, workdir, effective, kill_at, restart_seq, proxy_faults) -> Verdict:
        from sofia_runtime.journal import JournalError, journal_files, read_records, verify
        from sofia_runtime.reconcile import paper_venue_record

        files = journal_files(self.data / "audit" / verdict.runtime_id)
        problem = verify(files) if files else "no journal files"
        verdict.journal_intact = problem is None
        verdict.journal_problem = None if problem is None else str(problem)
        if problem is not None:
            verdict.failures.append(f"journal broken: {problem}")
        try:
            records = [rec for _, _, rec in read_records(files, in_progress=True)]
        except JournalError as exc:
            verdict.failures.append(f"journal unreadable: {exc}")
            records = []
        live_dups = None
        if self.opts.mode == "live":
            from sofia_runtime.reconcile import journal_views

            fetched: dict[str, tuple] = {}
            since = int(_epoch(records[0]["ts"]) * 1000) if records else None
            for view in journal_views(records).values():
                for venue in sorted({o["venue"] for o in view.orders.values()}):
                    fetched[venue] = live_venue_record(venue, view, self.opts.venue_url, os.environ, since)
            live_dups = {oid: why for _, unexplained in fetched.values() for oid, why in unexplained.items()}

            def venue_record(account, venue, view):
                return fetched[venue][0]
        else:
            def venue_record(account, venue, view):
                return paper_venue_record(self.data / "paper_venue" / account / f"{venue}.jsonl")
        return judge(scenario, verdict, records, venue_record, read_fault_log(workdir), kill_at=kill_at,
                     restart_seq=restart_seq, stale_after_s=effective.limits.stale_after_s,
                     proxy_faults=proxy_faults,
                     live_duplicates=live_dups)

    # --- all of them ------------------------------------------------------------------------------------------
    def run(self) -> list[Verdict]:
        from sofia_runtime import control

        state = control.read_pause(self.pause_path)
        if state.paused:
            raise DrillError(f"the data folder is paused by {state.paused_by} ({state.reason}): the drill would "
                             f"measure nothing; resume first (sofia-runtime resume)")
        busy = liveness.running_runtimes()
        if busy:
            raise DrillError(f"runtimes are running on {self.data}: {', '.join(busy)}. The drill's breaker pause "
                             f"(pause.json) is shared and would pause them too: stop them or use another "
                             f"SOFIA_DATA_DIR")
        self.announce(self.describe_order_flow())
        verdicts = []
        proxy = None
        if self.opts.mode == "live":
            from sofia_runtime.chaos_proxy import ProxyThread
            proxy = ProxyThread(self.opts.venue_url, seed=self.opts.seed)
        try:
            for scenario in self.scenarios:
                verdicts.append(self.run_scenario(scenario, proxy))
        finally:
            if proxy is not None:
                proxy.close()
        return verdicts

    def write_report(self, verdicts: list[Verdict]) -> Path:
        from sofia_runtime import paths

        report = {"stamp": self.stamp, "mode": self.opts.mode, "strategy": self.strategy,
                  "duration_s": self.opts.duration_s, "speed": self.opts.speed, "seed": self.opts.seed,
                  "order_flow": self.order_flow,
                  "passed": all(v.passed for v in verdicts), "scenarios": [v.as_dict() for v in verdicts]}
        out = paths.reports_dir() / f"chaos-{self.stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        os.replace(tmp, out)
        return out


def run_drill(opts: DrillOptions) -> int:
    """`sofia-runtime chaos`: 0 when every verdict passes, 1 when one fails, 2 when the drill cannot run."""
    try:
        drill = Drill(opts)
        verdicts = drill.run()
    except DrillError as exc:
        print(f"sofia-runtime chaos: {exc}", file=sys.stderr)
        return 2
    report = drill.write_report(verdicts)
    print_verdicts(verdicts, report)
    print(drill.describe_order_flow())
    return 0 if all(v.passed for v in verdicts) else 1
