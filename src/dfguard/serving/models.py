"""The model a running service judges with, and how it moves to a new champion without a failed request.

`ServedModels` holds one `ServedModel` (a loaded `Predictor` plus what `GET /model` reports) and replaces
it whole: a request takes `current()` once and judges with that object to the end, so a switch never
mixes two models in one answer, and the old model lives on until its last request lets go of it.

`refresh()` asks the registry which version `serve.model_uri` names. A new version is downloaded and
loaded beside the current one, checked on a blank frame (the face detector its contract names is built,
the weights run), and only then swapped in. A registry that cannot be reached, or a model that fails to
load, leaves the current model serving; the failure is logged and kept for `/readyz`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfguard.config import RegistryConfig
from dfguard.inference.predictor import Predictor

log = logging.getLogger(__name__)

LOCAL = "local"  # the alias reported for a model served from a folder, outside the registry


@dataclass(frozen=True)
class ServedModel:
    predictor: Predictor
    uri: str
    version: str  # the registry's version number; "" for a local folder
    alias: str
    info: dict[str, Any]  # `GET /model`: name, version, aliases, lineage, contract, test metrics
    loaded_at: float = field(default_factory=time.time)

    @property
    def label(self) -> dict[str, Any]:
        """What every answer says about the model that judged it."""
        return {
            "name": self.info.get("name", ""),
            "version": self.version,
            "alias": self.alias,
            "weights_sha256": self.predictor.weights_sha256,
        }


@dataclass
class RegistryHealth:
    reachable: bool | None = None  # None until the first check
    last_check: float | None = None
    last_error: str = ""
    refused: dict[str, str] = field(default_factory=dict)  # version -> why it was not loaded


def _alias_of(uri: str) -> str:
    return uri.rsplit("@", 1)[1] if "@" in uri else LOCAL


def _smoke_test(predictor: Predictor) -> None:
    """Judge one blank frame: builds the face detector and runs the model, so a model that cannot serve
    fails here, before it replaces one that can."""
    size = max(predictor.contract.min_face_px * 2, 128)
    predictor.predict_frames([np.full((size, size, 3), 127, np.uint8)])


class ServedModels:
    """The served model and its replacement from the registry (thread-safe)."""

    def __init__(self, model_uri: str, registry: RegistryConfig, workdir: Path | None = None) -> None:
        self.model_uri = model_uri
        self.registry_cfg = registry
        self.alias = _alias_of(model_uri)
        # Downloaded versions live here until replaced; a local folder is used where it is.
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="dfguard-serve-"))
        self.health = RegistryHealth()
        self._current: ServedModel | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it

    def current(self) -> ServedModel | None:
        return self._current

    @property
    def from_registry(self) -> bool:
        return self.model_uri.startswith("models:/")

    def refresh(self) -> bool:
        """Load the model `model_uri` names if it is not the one served; True when the model changed."""
        with self._lock:
            if not self.from_registry:
                if self._current is not None:
                    return False
                return self._switch(self._load_local())
            try:
                name, version, client = self._resolve()
            except Exception as err:  # any failure to reach or read the registry: keep serving
                self._note_unreachable(err)
                return False
            if self._current is not None and self._current.version == version:
                return False
            if version in self.health.refused:
                return False  # a broken version is not downloaded again at every check
            try:
                served = self._load_version(client, name, version)
            except Exception as err:
                reason = f"{type(err).__name__}: {err}"
                self.health.refused[version] = reason
                log.error(
                    "version %s of %s refused, keeping the current model: %s", version, self.model_uri, reason
                )
                return False
            return self._switch(served)

    def _resolve(self) -> tuple[str, str, Any]:
        """(registered name, version number, client) of `model_uri`, as the registry says now."""
        from dfguard.registry import configure, resolve_version

        client = configure(self.registry_cfg)
        name, version = resolve_version(client, self.model_uri)
        self.health.reachable, self.health.last_check, self.health.last_error = True, time.time(), ""
        return name, version, client

    def _note_unreachable(self, err: Exception) -> None:
        message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        if self.health.reachable is not False:
            served = self._current.version if self._current else "none"
            log.error("registry unreachable (%s); serving version %s meanwhile", message, served)
        self.health.reachable, self.health.last_check, self.health.last_error = False, time.time(), message

    def _load_local(self) -> ServedModel:
        from dfguard.registry import model_contract

        predictor = Predictor(self.model_uri)
        _smoke_test(predictor)
        contract, contract_hash = model_contract(Path(self.model_uri))
        info = {
            "name": predictor.config["model"]["name"],
            "version": "",
            "aliases": [LOCAL],
            "source": str(Path(self.model_uri).resolve()),
            "lineage": {},
            "contract": contract,
            "contract_hash": contract_hash,
            "metrics": {},
            "predictor": predictor.identity,
        }
        return ServedModel(predictor, self.model_uri, "", LOCAL, info)

    def _load_version(self, client: Any, name: str, version: str) -> ServedModel:
        from dfguard.registry import load, version_metrics

        folder = self.workdir / f"v{version}"
        shutil.rmtree(folder, ignore_errors=True)
        # By number, not alias: the alias may move again while this version downloads.
        predictor = Predictor(load(client, f"models:/{name}/{version}", folder))
        _smoke_test(predictor)
        registered = client.get_model_version(name, version)
        try:
            metrics = version_metrics(client, registered)
        except ValueError:
            metrics = {}
        tags = dict(registered.tags)
        info = {
            "name": predictor.config["model"]["name"],
            "registered_name": registered.name,
            "version": version,
            "aliases": sorted(registered.aliases),
            "run_id": registered.run_id,
            "lineage": {k.removeprefix("lineage."): v for k, v in tags.items() if k.startswith("lineage.")},
            "tags": {k: v for k, v in tags.items() if not k.startswith("lineage.")},
            "contract": predictor.config["contract"],
            "contract_hash": predictor.contract.hash,
            "metrics": {
                key: metrics[key] for key in ("video", "frame", "photo", "by_method") if key in metrics
            },
            "predictor": predictor.identity,
        }
        return ServedModel(predictor, self.model_uri, version, self.alias, info)

    def _switch(self, served: ServedModel) -> bool:
        previous, self._current = self._current, served
        log.info(
            "serving %s version %s (was %s)",
            self.model_uri,
            served.version or served.uri,
            previous.version if previous else "none",
        )
        if previous is not None and previous.version and previous.version != served.version:
            # The old model is in memory (in-flight requests keep it); its downloaded files are not needed.
            shutil.rmtree(self.workdir / f"v{previous.version}", ignore_errors=True)
        return True

    def status(self) -> dict[str, Any]:
        """`/readyz`'s detail: the model served and what the registry last said."""
        current = self._current
        return {
            "ready": current is not None,
            "model": current.label if current else None,
            "model_uri": self.model_uri,
            "registry": {
                "reachable": self.health.reachable,
                "last_check": self.health.last_check,
                "last_error": self.health.last_error,
                "refused_versions": dict(self.health.refused),
            }
            if self.from_registry
            else None,
        }
