"""Where chorus keeps generated data, checkpoints and reports (CHORUS_HOME, default ./artifacts)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def from_env(cls) -> Workspace:
        return cls(Path(os.environ.get("CHORUS_HOME", "artifacts")).resolve())

    def data_dir(self, model: str) -> Path:
        return self.home / "data" / model

    def checkpoint_dir(self, model: str) -> Path:
        return self.home / "checkpoints" / model

    def reports_dir(self, model: str) -> Path:
        path = self.home / "reports" / model
        path.mkdir(parents=True, exist_ok=True)
        return path
