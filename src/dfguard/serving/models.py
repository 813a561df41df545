"""The model a running service judges with, and how it moves to a new champion without a failed request.

`ServedModels` holds one `ServedModel` (a loaded `Predictor` plus what `GET /model` reports) and replaces
it whole: a request takes `current()` once and judges with that object to the end, so a switch never
mixes two models in one answer, and the old model lives on until its last request lets go of it.

`refresh()` asks the registry which version `serve.model_uri` names. A new version is downloaded and
loaded beside the current one, checked on a blank frame (the face detector its contract names is built,
the weights run), and only then swapped in. A registry that cannot be reached, or a model that fails to
load, leaves the current model serving; the failure is logged and kept for `/readyz`.

With a `cache_dir`, the model loaded from the registry is also copied there, with a JSON record of its
version, what `GET /model` says about it and the SHA-256 of each of its files. A service that starts
while the registry cannot be reached serves that copy, once every file matches its digest (weights stay
safetensors: nothing is unpickled), and says so in `/readyz` and `/model` (`served_from: "cache"`); the
next check that reaches the registry moves it to the champion as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dfguard.config import RegistryConfig
from dfguard.inference.predictor import Predictor

log = logging.getLogger(__name__)

LOCAL = "local"  # the alias reported for a model served from a folder, outside the registry
# Where a served model came from: `served_from` in `/readyz` and `/model`.
REGISTRY, CACHE, FOLDER = "registry", "cache", "folder"
CACHE_RECORD = "cached.json"  # in each model URI's cache folder: names the cached copy, with its digests


@dataclass(frozen=True)
class ServedModel:
    predictor: Predictor
    uri: str
    version: str  # the registry's version number; "" for a local folder
    alias: str
    info: dict[str, Any]  # `GET /model`: name, version, aliases, lineage, contract, test metrics
    source: str = REGISTRY  # REGISTRY, CACHE (the registry was unreachable at start) or FOLDER
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
    cache_error: str = ""  # why the cached model could not be served, when it was needed


def _alias_of(uri: str) -> str:
    return uri.rsplit("@", 1)[1] if "@" in uri else LOCAL


def _smoke_test(predictor: Predictor) -> None:
    """Judge one blank frame: builds the face detector and runs the model, so a model that cannot serve
    fails here, before it replaces one that can."""
    size = max(predictor.contract.min_face_px * 2, 128)
    predictor.predict_frames([np.full((size, size, 3), 127, np.uint8)])


class ServedModels:
    """The served model and its replacement from the registry (thread-safe)."""

    def __init__(
        self,
        model_uri: str,
        registry: RegistryConfig,
        workdir: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.model_uri = model_uri
        self.registry_cfg = registry
        self.alias = _alias_of(model_uri)
        # Downloaded versions live here until replaced; a local folder is used where it is.
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="dfguard-serve-"))
        # One folder per model URI: services of two URIs may share `cache_dir`.
        self.cache = ModelCache(cache_dir / _slug(model_uri)) if cache_dir and self.from_registry else None
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
                # Nothing served yet (the service is starting): the cached champion beats no model.
                changed = self._current is None and self.cache is not None and self._serve_cached(self.cache)
                self._note_unreachable(err)
                return changed
            current = self._current
            if current is not None and current.version == version and current.source == REGISTRY:
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
            changed = self._switch(served)
            if self.cache is not None:
                self.cache.save(served, self._registry_location())
            return changed

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
            current = self._current
            served = "none" if current is None else current.version
            cached = " (the cached copy)" if current is not None and current.source == CACHE else ""
            log.error("registry unreachable (%s); serving version %s%s meanwhile", message, served, cached)
        self.health.reachable, self.health.last_check, self.health.last_error = False, time.time(), message

    def _registry_location(self) -> str:
        from dfguard.registry import embedded_uri

        return self.registry_cfg.tracking_uri or embedded_uri(self.registry_cfg.root)

    def _serve_cached(self, cache: ModelCache) -> bool:
        """Serve the cached copy of the last champion loaded; False (logged) when there is none or it
        fails its digests or its smoke test."""
        try:
            served = cache.load(self.alias)
        except Exception as err:
            self.health.cache_error = f"{type(err).__name__}: {err}"
            log.error("no cached model to serve from %s: %s", cache.folder, self.health.cache_error)
            return False
        origin = served.info["cache"]
        log.warning(
            "the registry cannot be reached: serving the cached copy of version %s of %s (cached %s from %s)"
            " until it can",
            served.version,
            self.model_uri,
            origin["cached_at"],
            origin["registry"],
        )
        return self._switch(served)

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
            "served_from": FOLDER,
        }
        return ServedModel(predictor, self.model_uri, "", LOCAL, info, FOLDER)

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
            "served_from": REGISTRY,
        }
        return ServedModel(predictor, self.model_uri, version, self.alias, info)

    def _switch(self, served: ServedModel) -> bool:
        previous, self._current = self._current, served
        log.info(
            "serving %s version %s from the %s (was %s)",
            self.model_uri,
            served.version or served.uri,
            served.source,
            previous.version if previous else "none",
        )
        if previous is not None and previous.source == REGISTRY and previous.version != served.version:
            # The old model is in memory (in-flight requests keep it); its downloaded files are not needed.
            shutil.rmtree(self.workdir / f"v{previous.version}", ignore_errors=True)
        return True

    def status(self) -> dict[str, Any]:
        """`/readyz`'s detail: the model served and what the registry last said."""
        current = self._current
        return {
            "ready": current is not None,
            "model": current.label if current else None,
            "served_from": current.source if current else None,
            "model_uri": self.model_uri,
            "registry": {
                "reachable": self.health.reachable,
                "last_check": self.health.last_check,
                "last_error": self.health.last_error,
                "refused_versions": dict(self.health.refused),
                "cache_error": self.health.cache_error,
            }
            if self.from_registry
            else None,
        }


def _slug(model_uri: str) -> str:
    """A folder name for `model_uri` (`models:/dfguard-detector@champion` -> `dfguard-detector@champion`)."""
    return model_uri.removeprefix("models:/").replace("/", "_")


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by path relative to it."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            digests[path.relative_to(folder).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


class ModelCache:
    """The cached copy of the last model a service loaded from the registry for one model URI.

    `folder` holds `cached.json` and the copy it names, `v<version>-<weights sha>/`. A copy is written
    under a temporary name and renamed into place, then `cached.json` is replaced: a service killed
    half-way, or two workers saving at once, leave the previous record naming a whole copy.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    @property
    def record_path(self) -> Path:
        return self.folder / CACHE_RECORD

    def save(self, served: ServedModel, registry: str) -> None:
        """Record `served` (loaded from `registry`) as the cached model; a failure is logged, never
        raised: the service serves on without a cache."""
        try:
            source = served.predictor.model_dir
            files = _digests(source)  # of the files that loaded and passed the smoke test
            name = f"v{served.version}-{served.predictor.weights_sha256[:16]}"
            copy = self.folder / name
            if not copy.is_dir() or _digests(copy) != files:  # a copy left damaged is replaced
                shutil.rmtree(copy, ignore_errors=True)
                self._copy(source, copy)
            record = {
                "model_uri": served.uri,
                "registry": registry,
                "version": served.version,
                "cached_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "copy": name,
                "files": files,
                "info": served.info,
            }
            partial = self.folder / f".{CACHE_RECORD}.{uuid.uuid4().hex}.partial"
            try:
                partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
                partial.replace(self.record_path)
            finally:
                partial.unlink(missing_ok=True)  # a write that failed (disk full) leaves nothing
            for other in self.folder.iterdir():  # older copies; `.`-names are other workers' writes
                if other.is_dir() and other.name != name and not other.name.startswith("."):
                    shutil.rmtree(other, ignore_errors=True)
        except Exception as err:
            log.warning(
                "could not cache version %s in %s: %s: %s",
                served.version,
                self.folder,
                type(err).__name__,
                err,
            )

    def _copy(self, source: Path, copy: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{copy.name}.{uuid.uuid4().hex}.partial"
        try:
            shutil.copytree(source, partial)
            os.rename(partial, copy)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not copy.is_dir():  # another worker's rename of the same version wins otherwise
                raise

    def load(self, alias: str) -> ServedModel:
        """The cached model, loaded and smoke-tested; FileNotFoundError without one, ValueError when a
        file is missing or does not match its recorded digest."""
        if not self.record_path.is_file():
            raise FileNotFoundError(f"nothing cached yet ({self.record_path} does not exist)")
        record = json.loads(self.record_path.read_text())
        copy = self.folder / record["copy"]
        found = _digests(copy) if copy.is_dir() else {}
        wrong = sorted(name for name, digest in record["files"].items() if found.get(name) != digest)
        if wrong:
            raise ValueError(f"{copy}: {', '.join(wrong)} missing or not as cached (SHA-256 differs)")
        predictor = Predictor(copy)
        _smoke_test(predictor)
        info = {
            **record["info"],
            "predictor": predictor.identity,
            "served_from": CACHE,
            "cache": {"cached_at": record["cached_at"], "registry": record["registry"], "folder": str(copy)},
        }
        return ServedModel(predictor, record["model_uri"], record["version"], alias, info, CACHE)
