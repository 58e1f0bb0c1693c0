"""docs/operator_playbook.md is executable: every ```bash block runs, in order, in a data folder of its own."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from runtime_support import RuntimeData

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "docs" / "operator_playbook.md"

pytestmark = pytest.mark.slow


def playbook_blocks() -> list[tuple[str, str]]:
    """(section title, script) of every bash block, in document order."""
    blocks, section = [], ""
    for part in re.split(r"(^## [^\n]*$|^```bash\n.*?^```$)", PLAYBOOK.read_text(), flags=re.M | re.S):
        if part.startswith("## "):
            section = part[3:]
        elif part.startswith("```bash"):
            blocks.append((section, part.removeprefix("```bash\n").removesuffix("```")))
    return blocks


def test_the_playbook_has_a_command_for_each_duty():
    sections = {title for title, _ in playbook_blocks()}
    for duty in ("Start", "Pause", "Deploy", "Backfill", "Verify", "Restore", "Chaos"):
        assert any(duty in s for s in sections), duty


def test_every_playbook_command_runs(runtime_data: RuntimeData, tmp_path):
    work = tmp_path / "operator"
    work.mkdir()
    (work / "scripts").symlink_to(ROOT / "scripts")
    env = runtime_data.env(PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
                           SOFIA_RUNTIME_BIN=str(ROOT / ".venv" / "bin" / "sofia-runtime"), USER="operator")
    env.pop("DAGSTER_HOME", None)
    try:
        for section, script in playbook_blocks():
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, f"{section}:\n{script}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    finally:
        subprocess.run([str(ROOT / ".venv" / "bin" / "sofia-runtime"), "stop"], env=env, capture_output=True)
    assert (runtime_data.dir / "warehouse.lost").exists()
    assert subprocess.run([str(ROOT / ".venv" / "bin" / "sofia-runtime"), "verify-journal"], env=env,
                          capture_output=True).returncode == 0
