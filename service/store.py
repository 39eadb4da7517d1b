"""What the service reads from the BentoML model store: a model version's folder, in the layout of
`layout.artifacts` (written by `chorus export`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bentoml._internal.configuration.containers import BentoMLContainer

from layout import artifacts


@dataclass(frozen=True)
class StoredModel:
    """One version of a model in the store."""

    name: str
    """Store name, as `chorus export` registered it."""
    version: str
    path: Path

    @classmethod
    def resolve(cls, tag: str) -> StoredModel:
        """A tag such as `name:latest` or `name:abc123` -> the exact version it names now.

        What `bentoml.models.get` does (aliases, then the configured store), without importing
        `bentoml.models`: its analytics imports took 1.1 s of `chorus analyze`'s start-up."""
        tag = BentoMLContainer.model_aliases.get().get(tag, tag)
        model = BentoMLContainer.model_store.get().get(tag)
        return cls(model.tag.name, model.tag.version or "", Path(model.path))

    @property
    def config(self) -> dict[str, Any]:
        return artifacts.read_json(self.path, artifacts.CONFIG)

    @property
    def training_metrics(self) -> dict[str, Any]:
        return artifacts.read_json(self.path, artifacts.METRICS, default={})

    def read_json(self, name: str) -> Any:
        return artifacts.read_json(self.path, name)

    def verify(self, required: tuple[str, ...] = ()) -> None:
        """Raise ArtifactError unless every file is as exported (sha256 from the manifest) and the
        `required` ones are among them."""
        artifacts.verify_manifest(self.path, required)

    def onnx_path(self, variant: str) -> Path:
        path = self.path / artifacts.onnx_file(self.name, variant)
        if not path.exists():
            raise FileNotFoundError(f"{self.name}:{self.version} has no {variant} variant ({path.name}); re-export with it")
        return path
