"""Where Sofia keeps its files: `./data` by default, `SOFIA_DATA_DIR` where set."""

from __future__ import annotations

import os
from pathlib import Path


# A relative SOFIA_DATA_DIR is taken from where the process started, even if a library changes directory later.
_START_DIR = Path.cwd()


def data_dir() -> Path:
    return (_START_DIR / os.environ.get("SOFIA_DATA_DIR", "data")).resolve()


def warehouse_path() -> Path:
    return data_dir() / "warehouse.duckdb"


def serving_dir() -> Path:
    return data_dir() / "serving"


def audit_dir() -> Path:
    return data_dir() / "audit"


def control_dir() -> Path:
    return data_dir() / "control"


def pause_file() -> Path:
    return control_dir() / "pause.json"


def reports_dir() -> Path:
    return data_dir() / "reports"
