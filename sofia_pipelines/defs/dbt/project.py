"""The dbt project and its manifest, built with dbt's own `parse` (offline, no warehouse needed).

`python -m sofia_pipelines.defs.dbt.project` prepares it; `make` runs that after installing, and the
assets module does it on import when the manifest is missing or older than the project's files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

DBT_DIR = Path(__file__).resolve().parents[3] / "dbt"
dbt_project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def manifest_is_stale() -> bool:
    manifest = dbt_project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    for root, dirs, files in os.walk(DBT_DIR):
        dirs[:] = [d for d in dirs if d not in ("target", "logs")]  # not walked: every run's artifacts are there
        if any(os.stat(os.path.join(root, f)).st_mtime > built for f in files):
            return True
    return False


def prepare(force: bool = False) -> Path:
    """Build target/manifest.json with `dbt parse` when it is missing or stale."""
    if force or manifest_is_stale():
        dbt = Path(sys.executable).with_name("dbt")
        subprocess.run([str(dbt), "parse", "--quiet", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)],
                       check=True, cwd=DBT_DIR, env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    return dbt_project.manifest_path


if __name__ == "__main__":
    print(prepare(force=True))
