"""The chaos drill (feature M): faults injected between the engine and the venue (`inject`, inside the runtime),
and `sofia-runtime chaos` (`drill`, a parent process), which runs the runtime through the `scenarios` with an
`order_flow` of its own and judges what it did from the journal and the venue's own record (`verdict`).

Imports run one way: the runner imports `inject` only; `drill` imports `inject`, `scenarios`, `order_flow`,
`verdict` and the runner's pieces it needs. The names below are resolved on first use, so importing `inject` (the
runtime does, for every chaos run) never loads the drill.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "inject": ("CONTROL_ENV", "FaultLog", "FaultyVenue", "read_fault_log", "stale_market_data"),
    "scenarios": ("SCENARIOS", "Scenario", "scenarios_for", "stale_window"),
    "verdict": ("Verdict", "judge", "live_venue_record", "print_verdicts"),
    "order_flow": ("DRILL_GATE", "quoted_symbols"),
    "drill": ("Drill", "DrillError", "DrillOptions", "run_drill"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
