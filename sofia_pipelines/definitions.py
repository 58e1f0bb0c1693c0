"""The Sofia code location: every feature folder under `defs/` plus the shared resources."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster.components import load_defs

import sofia_pipelines.defs
from sofia_pipelines.resources import market_source_resource, warehouse_resource

EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")


def executor_from_env() -> dg.ExecutorDefinition:
    """`SOFIA_EXECUTOR` picks how a run executes its steps (docs/scaling.md):

    - `in_process` (default): every step in the run's own process, one after another. DuckDB has one writer
      at a time, and a local warehouse file is only safe this way without further limits.
    - `multiprocess`: one process per step on this machine; tune it with run config
      (deploy/executors/multiprocess.yaml).
    - `k8s`: one Kubernetes Job per step (dagster-k8s); `celery`: steps as Celery tasks (dagster-celery).
      Both put steps on other machines, so they need a warehouse those machines share (md:<db>).
    """
    name = os.environ.get("SOFIA_EXECUTOR", "in_process").strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise RuntimeError("SOFIA_EXECUTOR=k8s needs dagster-k8s installed (pip install 'sofia[k8s]')") from exc
        return k8s_job_executor
    if name == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise RuntimeError("SOFIA_EXECUTOR=celery needs dagster-celery installed "
                               "(pip install 'sofia[celery]')") from exc
        return celery_executor
    raise ValueError(f"SOFIA_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")


defs = dg.Definitions.merge(
    load_defs(sofia_pipelines.defs, project_root=Path(__file__).resolve().parent.parent),
    dg.Definitions(
        resources={"warehouse": warehouse_resource(), "market_source": market_source_resource()},
        executor=executor_from_env(),
    ),
)
