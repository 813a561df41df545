"""A strict name -> detector-class registry.

`get_model` records the fully resolved keyword arguments (defaults included) on the model, so a
saved model is rebuilt exactly as it was built even if a default changes later.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

from dfguard.models.base import Detector

DetectorT = TypeVar("DetectorT", bound=type[Detector])

_REGISTRY: dict[str, type[Detector]] = {}


def register_model(name: str) -> Callable[[DetectorT], DetectorT]:
    """Class decorator adding a detector under `name`; a second class under the same name raises."""

    def decorate(cls: DetectorT) -> DetectorT:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_class(name: str) -> type[Detector]:
    """The class registered as `name` (what kind of input it reads, before building one)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model(name: str, **cfg: Any) -> Detector:
    """Build the detector registered as `name` with keyword settings `cfg`."""
    cls = model_class(name)
    try:
        bound = inspect.signature(cls).bind(**cfg)
    except TypeError as err:
        raise ValueError(f"model {name!r}: {err}") from err
    bound.apply_defaults()
    model = cls(**bound.arguments)
    kwargs = {**bound.arguments, **model.nested_configs()}
    try:
        json.dumps(kwargs)
    except TypeError as err:  # a config that cannot be saved could not rebuild the model later
        raise ValueError(f"model {name!r}: settings must be JSON values: {err}") from err
    model.config = {"name": name, "kwargs": kwargs}
    return model


def crop_detector(
    name: str,
    input_size: int,
    channels_last: bool = True,
    frame_model: str = "efficientnet_lite0",
    **settings: Any,
) -> Detector:
    """The detector `name` reading face crops of `input_size` px: a frame model directly, a clip model
    over `frame_model` at that size. `settings` are the model's own (a clip model's pooling, the patch
    model's stage)."""
    frame_settings = {"input_size": input_size, "channels_last": channels_last}
    if model_class(name).clip_model:
        return get_model(name, frame_model={"name": frame_model, "kwargs": frame_settings}, **settings)
    return get_model(name, **frame_settings, **settings)
