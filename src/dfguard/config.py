"""Layered configuration: typed dataclass defaults, then `params.yaml`, then CLI overrides.

Each pipeline stage owns one section (`corpus`, `ingest`, ...). The resolved section is saved as JSON
beside every output so a result can always be traced to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")
RESOLVED_CONFIG_NAME = "resolved_config.json"

# Default paths that one stage writes and later stages read, defined once (params.yaml repeats them
# because dvc.yaml interpolates them from there).
SOURCES_DIR = "data/raw/sources"  # corpus: the fetched face photos
DEMO_CORPUS_DIR = "data/corpus/demo"  # corpus -> ingest, extract
MANIFEST_DIR = "data/manifest"  # ingest
MANIFEST_PATH = f"{MANIFEST_DIR}/manifest.parquet"  # ingest -> extract, train, evaluate
FACES_DIR = "data/faces"  # extract -> train, calibrate, evaluate
FEATURES_DIR = "data/embeddings"  # embed -> train, calibrate, evaluate (frozen-backbone models)
DETECTOR_DIR = "models/detector"  # train -> calibrate
CALIBRATED_DIR = "models/calibrated"  # calibrate -> evaluate
FEEDBACK_DIR = "data/feedback"  # service -> dashboard, feedback loop


class ConfigError(ValueError):
    """A params file or `--set` override that does not fit the config: an unknown section or setting,
    or a value of the wrong type. A ValueError, so the CLI reports it as `dfguard: error: ...`."""


def _did_you_mean(name: str, choices: list[str]) -> str:
    """` (did you mean 'x'?)` for the nearest of `choices`, or "" when none is close."""
    nearest = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {nearest[0]!r}?)" if nearest else ""


@dataclass
class CorpusConfig:
    """How the demo corpus is synthesised from real face photos shipped in packages."""

    sources_dir: str = SOURCES_DIR
    out_dir: str = DEMO_CORPUS_DIR
    seed: int = 1234
    clips_per_identity: int = 6
    min_face_px: int = 100
    max_identities: int = 0  # 0 keeps every identity found
    frame_width: int = 640
    frame_height: int = 360
    duration_s: tuple[float, float] = (2.0, 4.0)
    fps_choices: tuple[int, ...] = (15, 20, 24, 25)
    crf_choices: tuple[int, ...] = (18, 23, 28, 32)
    face_height_px: tuple[int, int] = (110, 170)
    workers: int = 0  # 0 uses every core


@dataclass
class IngestConfig:
    """How a dataset folder becomes one manifest with identity-disjoint splits."""

    dataset_dir: str = DEMO_CORPUS_DIR
    out_dir: str = MANIFEST_DIR
    layout: str = "auto"
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 17
    ffpp_splits_dir: str = ""  # folder holding FaceForensics++'s train/val/test JSON, when available
    workers: int = 0


@dataclass
class ExtractConfig:
    """How faces are sampled, found, aligned and cropped from the manifest's media (`dfguard extract`).

    Every setting that changes the crops is part of the preprocessing contract saved with the dataset;
    `manifest_path`, `dataset_dir`, `out_dir`, `workers` and `device` only say where and how fast.
    """

    manifest_path: str = MANIFEST_PATH
    dataset_dir: str = DEMO_CORPUS_DIR  # the manifest's paths are relative to it
    out_dir: str = FACES_DIR
    frames_train: int = 16  # frames sampled per video, by split; an image is always one frame
    frames_val: int = 16
    frames_test: int = 32
    detector: str = "mtcnn"
    # MTCNN's final score a face needs: heavily manipulated or shadowed fakes score 0.75-0.9, and a
    # dataset that drops them is biased towards easy fakes.
    min_score: float = 0.8
    min_face_px: int = 64  # smallest face kept (longest box side, frame pixels)
    search_face_px: int = 40  # frames with no kept face are searched down to this: FACE_TOO_SMALL or NO_FACE
    detect_face_px: int = 32  # frames are shrunk so the smallest face searched for measures this to MTCNN
    orientation_search: bool = True  # retry sideways/upside-down when most frames show no face
    margin: float = 1.3  # crop side in face squares of the alignment template
    crop_size: int = 224
    crop_format: str = "png"  # "png" (lossless) or "jpg"
    jpeg_quality: int = 95  # for crop_format "jpg"
    workers: int = 0  # processes; 0 uses every core
    device: str = ""  # "" uses CUDA when present, else the CPU


@dataclass
class EmbedConfig:
    """Frozen CLIP features of every face crop and of self-blends of the real ones (`dfguard embed`),
    the store `clip_frozen` trains and scores from."""

    faces_dir: str = FACES_DIR
    out_dir: str = FEATURES_DIR
    sbi_variants: int = 1  # self-blended fakes made of each real crop (what `clip_frozen` trains on)
    threads: int = 0  # onnxruntime threads; 0 uses every core


@dataclass
class TrainConfig:
    """How a detector is trained on a face dataset (`dfguard train`). Defaults fit the demo corpus on
    2 CPU cores in a few minutes; on a GPU, raise `input_size`, `epochs` and `samples_per_epoch`."""

    faces_dir: str = FACES_DIR
    # Says which real clip each fake was made from, so a fake is trained next to its original frame;
    # "" or a missing file pairs dataset fakes with random real faces instead.
    manifest_path: str = MANIFEST_PATH
    out_dir: str = DETECTOR_DIR
    checkpoint_dir: str = "models/checkpoints"  # outside out_dir: checkpoints are not the model
    model: str = "efficientnet_lite0"
    input_size: int = 128  # crops are resized to this; recorded in the model's preset
    # Clip models (`temporal`): the frame model whose backbone reads each face, how its features are
    # pooled over time ("lstm" or "attention"), and the consecutive faces of a track per training clip.
    frame_model: str = "efficientnet_lite0"
    pooling: str = "lstm"
    clip_length: int = 8
    patch_stage: int = 4  # the patch model: the block stage of EfficientNet-Lite0 its patches come from
    # Models on frozen features (`clip_frozen`): the head ("linear" or "mlp", of `head_hidden` units),
    # the passes over the cached training features, and where `dfguard embed` cached them.
    head: str = "linear"
    head_hidden: int = 256
    head_epochs: int = 40
    features_dir: str = FEATURES_DIR
    # A trained model folder to start from: the same model (fine-tuning) or, for a clip model, the frame
    # model it is built on (its backbone). "" starts from the package's pretrained weights.
    init_from: str = ""
    sbi: bool = True  # self-blended fakes made on the fly from real faces
    use_dataset_fakes: bool = True  # False: reals + self-blends only (generalises to unseen methods)
    sbi_share: float = 0.5  # share of the fakes drawn that are self-blends, when both kinds are used
    sbi_background_share: float = 0.0  # self-blends whose colour change goes to the background (and real)
    ema_decay: float = 0.0  # average of the weights, updated each step, validated and saved; 0: off
    augment: float = 1.0  # scales every augmentation's probability (0 turns augmentation off)
    loss: str = "bce"  # "bce" or "focal"
    blend_map_weight: float = 1.0  # weight of the manipulation-map loss, for models that output a map
    # Strength of the identity adversary's reversed gradient (`training.identity`): how hard the
    # backbone is pushed away from features that tell the training people apart; 0: no adversary.
    identity_weight: float = 0.0
    focal_gamma: float = 2.0
    lr: float = 1e-3  # of the head; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    grad_clip: float = 0.0  # largest gradient norm per step; 0: unclipped (the loop's fine-tunes clip)
    epochs: int = 8
    frozen_epochs: int = 1  # head-only warm-up epochs, backbone weights and BatchNorm frozen
    warmup_fraction: float = 0.1  # of all steps, linear learning-rate warm-up before the cosine decay
    batch_size: int = 32  # faces per batch (a clip model's batch: batch_size // clip_length clips)
    samples_per_epoch: int = 1536  # class-balanced faces per epoch (the train split has ~4000)
    patience: int = 3  # epochs without a better validation video AUC before stopping
    seed: int = 7
    device: str = ""  # "" uses CUDA when present, else the CPU
    amp: bool = True  # mixed precision, on CUDA only
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU and on tensor cores
    workers: int = 0  # data loader processes (spawned); 0 loads in the training process
    resume: bool = False  # continue from the last checkpoint of the same settings


@dataclass
class CalibrateConfig:
    """Temperature, threshold and UNCERTAIN band fitted on the validation split (`dfguard calibrate`)."""

    model_dir: str = DETECTOR_DIR  # the trained model
    faces_dir: str = FACES_DIR
    out_dir: str = CALIBRATED_DIR  # the deployable model: the trained one plus its calibration
    report_dir: str = "reports/calibrate"
    target_precision: float = 0.9  # on each side of the UNCERTAIN band: verdicts right this often
    max_uncertain_fraction: float = 0.3  # at most this share of videos may be UNCERTAIN
    # Fuse the faces' motion against the head around them (faces/motion.py) into the video logit, fitted
    # on the validation videos before the temperature. Off by default: real clips whose jaw moves as in
    # speech drift like pasted faces (docs/results.md), and a verdict must not rest on it until the
    # measurement tells the two apart.
    motion: bool = False
    # Fakes of these methods (and every real) are what calibration fits on; empty: every video. A study
    # of generalisation to a method keeps it out, e.g. ("SelfBlend",) with `train --sbi-only`.
    fit_methods: tuple[str, ...] = ()


@dataclass
class EvaluateConfig:
    """Metrics of a model on one split of a face dataset (`dfguard evaluate`)."""

    model_dir: str = CALIBRATED_DIR
    faces_dir: str = FACES_DIR
    manifest_path: str = MANIFEST_PATH  # compression per video, when present
    split: str = "test"
    out_dir: str = "reports/evaluate"
    aggregation: str = ""  # "" uses the model's rule; "mean", "max" or "confident" overrides it


@dataclass
class FlowsConfig:
    """How the Prefect flows fan out and when `dfguard flows serve` runs them."""

    extract_runner: str = "process"  # "process" (local pool), "thread" or "dask"
    dask_address: str = ""  # an existing Dask scheduler (tcp://host:8786); "" starts a local cluster
    workers: int = 0  # 0 uses every core
    pipeline_cron: str = "0 3 * * *"  # the whole chain, nightly
    extract_interval_minutes: int = 60  # new raw data becomes faces within the hour
    loop_interval_minutes: int = 30  # how often the loop's gate looks for enough new labels


@dataclass
class RegistryConfig:
    """Where runs and registered models live (`dfguard models ...`, `dfguard server start`)."""

    tracking_uri: str = ""  # "" is the embedded store under `root`; a team sets its `mlflow server` URL
    root: str = "mlflow"  # embedded store: `mlflow.db` (runs + registry) and `artifacts/`
    experiment: str = "dfguard"


@dataclass
class PromotionConfig:
    """The promotion gate: how much a challenger may trail the champion on the frozen test suite."""

    auc_tolerance: float = 0.005  # video-level AUC may be at most this much below the champion's
    method_tolerance: float = 0.02  # per manipulation method AUC, the same
    max_ece: float = 0.1  # the highest video-level calibration error a new champion may have


@dataclass
class FeedbackConfig:
    """The prediction store the service writes and the dashboard and the feedback loop read."""

    # "" is the SQLite file `predictions.db` under `root`; a team sets a PostgreSQL URL (or DFGUARD_DB_URL)
    db_url: str = ""
    root: str = FEEDBACK_DIR  # the SQLite file, and the face crops and uploads saved by content hash
    keep_uploads: bool = True  # save each upload (by its SHA-256) so a reviewer can replay it
    retention_days: int = 90  # predictions older than this (and their files) go at `dfguard feedback purge`
    retry_s: float = 5.0  # a write that failed (store down) is retried this often, kept in memory meanwhile
    max_pending: int = (
        10000  # writes held for a store that is down; beyond it the oldest are dropped, counted
    )


@dataclass
class ServeConfig:
    """`dfguard serve`: the BentoML detection service."""

    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = 1  # worker processes, each with its own model copy
    # Requests each worker judges at once (BentoML runs one by default): decoding and face detection
    # release the GIL, so a few overlap well even on 2 cores.
    threads: int = 4
    model_uri: str = "models:/dfguard-detector@champion"  # or a local model folder
    reload_interval_s: float = 10.0  # how often the registry is asked whether the champion moved; 0: never
    # A copy of the last champion loaded from the registry, served by a service that starts while the
    # registry cannot be reached; "" keeps no copy (such a start then waits for the registry).
    cache_dir: str = "data/service/model-cache"
    max_image_mb: float = 20.0  # uploads above these are refused (413) while streaming, before decoding
    max_video_mb: float = 250.0
    max_batch_files: int = 16  # files per `/detect/batch` call
    job_ttl_s: float = 3600.0  # finished async jobs' results are kept this long
    keys_file: str = ""  # API keys, one `key_id:sha256(key)` per line; "" with auth off
    # "auto": keys required when bound beyond localhost; "on" / "off" force it
    auth: str = "auto"
    admin_key_ids: tuple[str, ...] = ()  # key ids allowed `POST /admin/reload`; () = every key
    rate_per_s: float = 5.0  # requests per second per key (client address without auth), sustained
    rate_burst: int = 20  # requests a key may make at once before the rate applies


@dataclass
class DashboardConfig:
    """`dfguard dashboard`: the reviewers' Streamlit app over the prediction store."""

    host: str = "127.0.0.1"
    port: int = 8501
    service_url: str = "http://127.0.0.1:3000"  # "Check a file" sends uploads here ($DFGUARD_API_KEY as key)
    # "local": the store's users table (`dfguard users add`); "oidc": Streamlit's st.login, configured in
    # .streamlit/secrets.toml, with roles from the users table by e-mail
    auth: str = "local"
    lease_minutes: float = 10.0  # an item a reviewer opened is theirs this long, then back in the queue
    second_review_share: float = 0.1  # of the items, labelled again by a second reviewer (agreement)
    queue_rule: str = "uncertain"  # the queue's default order: uncertain, disagreement, oldest, audit


@dataclass
class LoopConfig:
    """The continual-learning loop: reviewers' labels -> feedback dataset -> drift report -> gate ->
    low-learning-rate fine-tune with replay, or re-calibration -> challenger -> promotion."""

    dataset_dir: str = "data/feedback-faces"  # the feedback face dataset (`dfguard feedback export`)
    work_dir: str = "models/loop"  # each loop run's fine-tuned and calibrated models
    holdout_share: float = 0.3  # items kept out of fine-tuning to measure the gain on (by content hash)
    # The gate: when to wait, re-calibrate only, or fine-tune.
    min_new_labels: int = 20  # labelled items since the last loop run before anything runs
    min_errors: int = 5  # labelled items the champion got wrong that call for a fine-tune on their own
    ece_rise: float = (
        0.05  # the champion's calibration error on feedback above its test ECE by this: re-calibrate
    )
    # Drift: the current window of predictions against the champion's training faces.
    drift_dir: str = (
        "reports/drift"  # one HTML + JSON Evidently report per loop run (the dashboard lists them)
    )
    drift_window_days: float = 7.0  # predictions of the last D days ...
    drift_window_last: int = 0  # ... or the last N predictions when > 0
    drift_max_rows: int = 1000  # each side sampled down to this: 2,000 rows cost about a minute on 2 cores
    drift_share: float = 0.5  # share of drifted columns that counts as drift
    # The fine-tune: from the champion, few epochs at a low rate, replaying the original training faces.
    lr: float = 1e-4  # the head's; the backbone gets lr * train.backbone_lr_scale
    epochs: int = 2
    samples_per_epoch: int = 512
    replay_share: float = 0.5  # share of each epoch's faces drawn from the original training split
    grad_clip: float = 1.0
    # The promotion gate's loop checks, beside the `promotion` section's on the frozen test suite.
    # A head on frozen features (clip_frozen) is fine-tuned on cached features: it may move faster
    # than a backbone, and its passes cost milliseconds.
    head_lr: float = 3e-4
    head_epochs: int = 10
    # What a round that learns does: "expert" adds an expert to the champion's composition and leaves
    # everything it holds untouched (loop/experts.py); "finetune" refits the head with replay.
    learn: str = "expert"
    expert_identity_rank: int = 16  # identity directions of the reals projected out before the fit
    expert_strength: float = 0.05  # the expert's logistic regression C (smaller: more regularised)
    expert_folds: int = 5  # groups of people held out to fit the threshold on
    expert_real_fire: float = 0.01  # share of held-out real faces an expert may fire on
    expert_person_fire: float = 0.05  # ... and of any one held-out person's real faces
    expert_min_person_faces: int = 8  # a person with fewer held-out faces sets no threshold of their own
    expert_reals_per_video: int = 4  # training + validation real faces per video the expert sees
    max_person_fp_rise: float = 0.1  # no frozen-suite person's reals called FAKE this much more often
    max_forgetting: float = 0.01  # frozen-suite video AUC may fall at most this much
    min_holdout_gain: float = 0.0  # the challenger must beat the champion on the feedback holdout by more
    simulated_reviewer: bool = False  # `dfguard loop demo` labels from ground truth; never on by default


@dataclass
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert a YAML or command-line value to the field's declared type, or raise ValueError."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        items = list(value) if isinstance(value, list | tuple) else yaml.safe_load(str(value))
        if not isinstance(items, list):
            raise ValueError(f"expected a list, got {value!r}")
        item_type = args[0]
        fixed_length = len(args) != 2 or args[1] is not Ellipsis
        if fixed_length and len(items) != len(args):
            raise ValueError(f"expected {len(args)} items, got {items!r}")
        return tuple(_coerce(item, item_type) for item in items)
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"expected a boolean, got {value!r}")
        return text in {"true", "1", "yes"}
    if annotation in (int, float, str):
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return annotation(value)
    raise ValueError(f"unsupported field type {annotation!r}")


def _names(obj: Any) -> list[str]:
    """The field names of a dataclass: a Config's sections, or a section's settings."""
    return [f.name for f in dataclasses.fields(obj)]


def _unknown_section(config: Config, name: str, where: str) -> ConfigError:
    sections = _names(config)
    return ConfigError(
        f"{where}: unknown section {name!r}{_did_you_mean(name, sections)}; sections: {', '.join(sections)}"
    )


def _unknown_setting(config: Config, section: str, key: str, where: str) -> ConfigError:
    """The error for `key` missing from `section`: names the nearest setting there, else the sections
    that do have `key` (`train.min_score` -> `extract.min_score`)."""
    known = _names(getattr(config, section))
    hint = _did_you_mean(key, known)
    if not hint:
        elsewhere = [f"{other}.{key}" for other in _names(config) if key in _names(getattr(config, other))]
        hint = f" (did you mean {' or '.join(map(repr, elsewhere))}?)" if elsewhere else ""
    listing = "" if hint else f"; known: {', '.join(known)}"
    return ConfigError(f"{where}: unknown setting {key!r} in section {section!r}{hint}{listing}")


def _apply(config: Config, name: str, values: dict[str, Any], where: str) -> None:
    """Replace section `name` of `config` by itself updated with `values`, each checked and coerced."""
    section = getattr(config, name)
    hints = typing.get_type_hints(type(section))
    updates = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_setting(config, name, str(key), where)
        try:
            updates[key] = _coerce(value, hints[key])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: bad value for {key!r}: {err}") from err
    setattr(config, name, dataclasses.replace(section, **updates))


def load_config(params_path: Path | None = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Config:
    """Build the config from defaults, `params_path` (when it exists), then `overrides`.

    Overrides are keyed `section.field`, as given on the command line (`--set corpus.seed=7`). An
    unknown section or setting, in either, raises ConfigError naming the nearest valid one: a typo
    must never leave a default silently in force.
    """
    config = Config()
    sections = _names(config)
    if params_path is not None and params_path.exists():
        loaded = yaml.safe_load(params_path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{params_path}: expected a mapping of sections")
        for name, values in loaded.items():
            if name not in sections:
                raise _unknown_section(config, str(name), str(params_path))
            if not isinstance(values, dict):
                raise ConfigError(f"{params_path}: section {name!r} must be a mapping")
            _apply(config, name, values, f"{params_path}:{name}")
    for dotted, value in (overrides or {}).items():
        name, _, key = dotted.partition(".")
        where = f"override {dotted!r}"
        if not key:
            raise ConfigError(f"{where}: expected section.field with section in {', '.join(sections)}")
        if name not in sections:
            raise _unknown_section(config, name, where)
        _apply(config, name, {key: value}, where)
    return config


# How `dfguard serve` and `dfguard dashboard` hand their settings to the processes they start (BentoML's
# workers, Streamlit's script runs): the params file's path and a JSON object of `section.key` values.
PARAMS_ENV, OVERRIDES_ENV = "DFGUARD_PARAMS", "DFGUARD_OVERRIDES"


def settings_env(params_path: Path, overrides: dict[str, Any]) -> dict[str, str]:
    """The environment that makes `config_from_env` in a child process load this configuration."""
    return {PARAMS_ENV: str(params_path.resolve()), OVERRIDES_ENV: json.dumps(overrides)}


def config_from_env() -> Config:
    """The configuration a parent `dfguard` command passed down (see `settings_env`); without one, the
    params file in the working directory."""
    overrides = json.loads(os.environ.get(OVERRIDES_ENV, "") or "{}")
    if not isinstance(overrides, dict):
        raise ConfigError(f"${OVERRIDES_ENV} must be a JSON object of section.key values")
    return load_config(Path(os.environ.get(PARAMS_ENV, "") or PARAMS_FILE), overrides)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Parse `section.field=value` strings from the command line."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected section.field=value")
        parsed[key.strip()] = value.strip()
    return parsed


# user:password@ in a URL (a team's PostgreSQL store or MLflow server): what must never be written out.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)[^@/\s]+@")


def shareable(section: Any) -> dict[str, Any]:
    """A config (or section) as a dict with any URL's password masked: what is written beside outputs
    and logged to MLflow, which more people read than may open the databases."""

    def masked(value: Any) -> Any:
        if isinstance(value, str):
            return _URL_PASSWORD.sub(r"\g<head>***@", value)
        if isinstance(value, dict):
            return {key: masked(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [masked(item) for item in value]
        return value

    return masked(dataclasses.asdict(section))


def save_resolved(section: Any, out_dir: Path) -> Path:
    """Write the resolved config section beside an output and return the file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESOLVED_CONFIG_NAME
    path.write_text(json.dumps(shareable(section), indent=2, sort_keys=True) + "\n")
    return path
