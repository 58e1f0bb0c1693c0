"""Fixtures for the runtime's tests (the helpers live in runtime_support.py)."""

from __future__ import annotations

import os

import pytest

from runtime_support import RuntimeData, publish


@pytest.fixture
def runtime_data(tmp_path, monkeypatch) -> RuntimeData:
    """SOFIA_DATA_DIR = tmp_path (absolute), with the hand-made snapshot published as CURRENT."""
    monkeypatch.setenv("SOFIA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SOFIA_WAREHOUSE", raising=False)
    for name in list(os.environ):
        if name.startswith(("SOFIA_RUNTIME_", "SOFIA_BINANCE_", "SOFIA_OKX_")):
            monkeypatch.delenv(name)
    return RuntimeData(tmp_path, publish(tmp_path))
