"""Shared fixtures: every test gets its own data folder (warehouse, serving, audit, control)."""

from __future__ import annotations

import pytest


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("SOFIA_DATA_DIR", str(d))
    monkeypatch.delenv("SOFIA_WAREHOUSE", raising=False)
    monkeypatch.delenv("SOFIA_SOURCE", raising=False)
    return d


@pytest.fixture
def resources(data_dir):
    """The code location's resources pointed at the test's own data folder."""
    from sofia_pipelines.resources import market_source_resource, warehouse_resource

    return {"warehouse": warehouse_resource(), "market_source": market_source_resource()}


@pytest.fixture(scope="session")
def holdout():
    """The real market data beside the repository (`../shared/holdout`, or SOFIA_HOLDOUT_DIR), read in place.
    Missing, it fails under CI (where it is always laid) and skips elsewhere, saying where it looked."""
    import os

    from holdout_data import holdout_dir

    path = holdout_dir()
    if not (path / "README.md").is_file():
        message = f"real market data not found at {path} (set SOFIA_HOLDOUT_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
