"""What the service reads from the BentoML model store: a model version's folder, in the layout of
`layout.artifacts` (written by `chorus export`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml.exceptions import BentoMLException

from layout import artifacts

_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]*")
"""A name or version BentoML would keep as it is (it lowercases the rest)."""


class ModelNotFoundError(LookupError):
    """No model in the store has the tag asked for: says which ones it holds."""


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
        `bentoml.models`: its analytics imports took 1.1 s of `chorus analyze`'s start-up. A plain
        tag is read from the store's folders (`name/latest` holds the latest version); anything else
        (a version prefix, a missing `latest` file) goes to BentoML's store, ~0.1 s more."""
        tag = BentoMLContainer.model_aliases.get().get(tag, tag)
        store = Path(BentoMLContainer.model_store_dir.get())
        if found := cls._in_folders(store, tag):
            return found
        try:
            model = BentoMLContainer.model_store.get().get(tag)
        except BentoMLException as exc:  # NotFound, or a tag it cannot read
            stored = sorted(f"{d.name}:latest" for d in store.iterdir() if (d / "latest").is_file()) if store.is_dir() else []
            raise ModelNotFoundError(
                f"no model {tag!r} in the model store {store} ({exc}); it holds {', '.join(stored) or 'none'}."
                " `chorus export NAME` (or `make up`) puts one there"
            ) from None
        return cls(model.tag.name, model.tag.version or "", Path(model.path))

    @classmethod
    def _in_folders(cls, store: Path, tag: str) -> StoredModel | None:
        name, _, version = tag.partition(":")
        if not _PLAIN.fullmatch(name) or not _PLAIN.fullmatch(version or "latest"):
            return None  # BentoML lowercases, or refuses, with its own messages
        try:
            if version in ("", "latest"):
                version = (store / name / "latest").read_text().strip()
        except OSError:
            return None
        path = store / name / version
        if not _PLAIN.fullmatch(version) or not (path / "model.yaml").is_file():
            return None
        return cls(name, version, path)

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
