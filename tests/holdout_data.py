"""Where the real held-out market data is: `../shared/holdout` beside the repository, or SOFIA_HOLDOUT_DIR. Read in
place, never copied into the repository."""

import os
from pathlib import Path


def holdout_dir() -> Path:
    return Path(os.environ.get("SOFIA_HOLDOUT_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "holdout")
