"""The deploy/ files against the schemas Dagster itself validates them with, and the executor switch."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config, get_concurrency_config

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _executor_from_env():
    from sofia_pipelines.definitions import executor_from_env

    return executor_from_env


def test_executor_is_chosen_by_sofia_executor(monkeypatch):
    executor_from_env = _executor_from_env()
    monkeypatch.delenv("SOFIA_EXECUTOR", raising=False)
    assert executor_from_env() is dg.in_process_executor
    monkeypatch.setenv("SOFIA_EXECUTOR", "multiprocess")
    assert executor_from_env() is dg.multiprocess_executor
    monkeypatch.setenv("SOFIA_EXECUTOR", "threads")
    with pytest.raises(ValueError, match=r"SOFIA_EXECUTOR='threads' is not one of in_process, multiprocess, k8s, celery"):
        executor_from_env()


@pytest.mark.parametrize(("name", "package"), [("k8s", "dagster_k8s"), ("celery", "dagster_celery")])
def test_distributed_executors_come_from_their_packages(monkeypatch, name, package):
    executor_from_env = _executor_from_env()
    monkeypatch.setenv("SOFIA_EXECUTOR", name)
    if importlib.util.find_spec(package) is None:
        with pytest.raises(RuntimeError, match=rf"SOFIA_EXECUTOR={name} needs {package.replace('_', '-')}"):
            executor_from_env()
    else:
        assert executor_from_env().name == name


@pytest.mark.parametrize(("name", "package"), [("multiprocess", None), ("k8s", "dagster_k8s"),
                                                ("celery", "dagster_celery")])
def test_executor_run_config_files_fit_their_executor(monkeypatch, name, package):
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed: deploy/executors/{name}.yaml cannot be checked against it")
    executor_from_env = _executor_from_env()
    monkeypatch.setenv("SOFIA_EXECUTOR", name)
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "redis://localhost:6379/1")
    run_config = yaml.safe_load((DEPLOY / "executors" / f"{name}.yaml").read_text())
    result = process_config(executor_from_env().config_schema.config_type, run_config["execution"]["config"])
    assert result.success, [e.message for e in result.errors]
    # the file is the executor's own: the in-process executor refuses it
    assert not validate_config(dg.in_process_executor.config_schema.config_type,
                               run_config["execution"]["config"]).success
    for module in (result.value.get("start_method") or {}).get("forkserver", {}).get("preload_modules", []):
        assert importlib.util.find_spec(module) is not None, module


def test_production_instance_file_is_valid_dagster_instance_config(tmp_path):
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    pg = config["storage"]["postgres"]["postgres_db"]
    assert {k: pg[k] for k in ("hostname", "port", "username", "password", "db_name")} == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}}
    assert pg["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres brings, whatever SQLAlchemy's default
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "dagster/code_location", "value": "sofia", "limit": 1} in limits


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_helm_values_match_the_instance_schema_and_the_code_location():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    helm = values["concurrency"]
    assert helm.pop("enabled") is True
    # the chart writes these keys snake_cased into the instance's dagster.yaml
    instance_form = {_snake(section): {_snake(k): v for k, v in body.items()} for section, body in helm.items()}
    assert validate_config(get_concurrency_config().config_type, instance_form).success
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] is None and queued["tagConcurrencyLimits"] == []  # not set twice

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert importlib.util.find_spec(args[args.index("-m") + 1]) is not None
    env = {e["name"]: e["value"] for e in deployment["env"]}
    from sofia_pipelines.definitions import EXECUTORS

    assert env["SOFIA_EXECUTOR"] in EXECUTORS
    # steps on separate pods cannot share a DuckDB file
    assert env["SOFIA_EXECUTOR"] in ("in_process", "multiprocess") or env["SOFIA_WAREHOUSE"].startswith("md:")
    location_limit = next(t for t in instance_form["runs"]["tag_concurrency_limits"]
                          if t["key"] == "dagster/code_location")
    assert location_limit["value"] == deployment["name"]
