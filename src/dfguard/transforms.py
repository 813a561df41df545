"""The one preprocessing module shared by training, evaluation and serving.

Input everywhere is an aligned face crop as the extraction stage writes it: a uint8 HxWx3 array in
OpenCV's **BGR** channel order (what `cv2.imread` and `faces.align.align_face` give). The eval preset
resizes it to the model's input size, converts it to RGB (the order every ImageNet weight file was
trained in) and normalises it with the model's own mean/std. Training augmentations work on the same
uint8 BGR crops before that step, so a training sample and a served face go through identical code.

Augmentations imitate what happens to real footage between camera and detector (re-compression,
blur, resampling, sensor noise, colour changes, mirroring). Each draws its randomness from a numpy
`Generator` passed in, so a sample is reproducible from its seed (data loader workers seed one per
sample from (seed, epoch, index)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite weights were trained on (x - 127) / 128, i.e. about [-1, 1].
SYMMETRIC_MEAN = (0.5, 0.5, 0.5)
SYMMETRIC_STD = (0.5, 0.5, 0.5)
# OpenAI CLIP's image statistics, which its image tower (`models.clip`) was trained on.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHANNEL_ORDER = "BGR"


@dataclass(frozen=True)
class Preset:
    """How a crop becomes a model input; saved with every model as part of its preprocessing contract."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = CHANNEL_ORDER  # of the uint8 crops the preset accepts

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            channel_order=str(data["channel_order"]),
        )


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (a probability of 0 turns one off)."""

    p_flip: float = 0.5
    p_colour: float = 0.5
    brightness: float = 0.15  # value scale drawn from 1 +- this
    contrast: float = 0.15
    saturation: float = 0.2
    hue_degrees: float = 8.0
    p_noise: float = 0.2
    noise_sigma: tuple[float, float] = (2.0, 8.0)  # in uint8 levels
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.4, 1.5)
    p_downscale: float = 0.25
    downscale: tuple[float, float] = (0.35, 0.9)  # fraction of the side kept before scaling back up
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)


def scaled_augmentation(scale: float, base: AugmentConfig | None = None) -> AugmentConfig:
    """`base` (the defaults) with every probability multiplied by `scale` (capped at 1)."""
    base = base or AugmentConfig()
    if scale < 0:
        raise ValueError(f"the augmentation scale must be at least 0, got {scale}")
    probabilities = {
        f.name: min(1.0, getattr(base, f.name) * scale) for f in fields(base) if f.name.startswith("p_")
    }
    return replace(base, **probabilities)


def _check_crop(crop: np.ndarray) -> None:
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 crop, got {crop.dtype} {crop.shape}")


def resize(crop: np.ndarray, size: int) -> np.ndarray:
    """Square resize; area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    shrinking = crop.shape[0] > size or crop.shape[1] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def to_tensor(crop: np.ndarray, preset: Preset) -> torch.Tensor:
    """The eval preset: a uint8 BGR crop -> a normalised float tensor (3, S, S) in RGB order."""
    _check_crop(crop)
    rgb = resize(crop, preset.input_size)[:, :, ::-1]
    mean = np.asarray(preset.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(preset.std, np.float32) * 255.0)
    normalised = (rgb.astype(np.float32) - mean) * inv_std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def to_batch(crops: list[np.ndarray], preset: Preset) -> torch.Tensor:
    """Several crops -> one (B, 3, S, S) batch."""
    return torch.stack([to_tensor(crop, preset) for crop in crops])


def hflip(crop: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(crop[:, ::-1])


def _lut(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def colour_jitter(
    crop: np.ndarray,
    rng: np.random.Generator,
    brightness: float,
    contrast: float,
    saturation: float,
    hue_degrees: float,
) -> np.ndarray:
    """Random hue, saturation, brightness (in HSV; OpenCV's hue unit is 2 degrees) and contrast.

    Each change is a per-channel map of the 256 uint8 levels, applied as a lookup table: about ten
    times faster than float arithmetic on the image, which matters inside data loader workers.
    """
    levels = np.arange(256, dtype=np.float32)
    hue = np.rint(levels + rng.uniform(-hue_degrees, hue_degrees) / 2.0) % 180.0
    sat = levels * rng.uniform(1 - saturation, 1 + saturation)
    val = levels * rng.uniform(1 - brightness, 1 + brightness)
    h, s, v = cv2.split(cv2.cvtColor(crop, cv2.COLOR_BGR2HSV))
    hsv = cv2.merge([cv2.LUT(h, _lut(hue)), cv2.LUT(s, _lut(sat)), cv2.LUT(v, _lut(val))])
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    mean = float(out.mean())
    return cv2.LUT(out, _lut((levels - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean))


def gaussian_blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(crop, (0, 0), sigma)


def gaussian_noise(crop: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    noisy = crop.astype(np.float32) + rng.normal(0.0, sigma, crop.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def downscale_upscale(crop: np.ndarray, factor: float) -> np.ndarray:
    """Lose detail as a low-resolution upload does: shrink by `factor`, then scale back up."""
    height, width = crop.shape[:2]
    small = (max(round(width * factor), 1), max(round(height * factor), 1))
    shrunk = cv2.resize(crop, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR)


def jpeg_recompress(crop: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the crop")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def augment(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Apply the training augmentations in the order footage meets them: the scene (mirror, colour),
    the sensor (noise), optics and resampling (blur, downscale), and last the encoder (JPEG)."""
    _check_crop(crop)
    out = crop
    if rng.random() < cfg.p_flip:
        out = hflip(out)
    if rng.random() < cfg.p_colour:
        out = colour_jitter(out, rng, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue_degrees)
    if rng.random() < cfg.p_noise:
        out = gaussian_noise(out, rng, rng.uniform(*cfg.noise_sigma))
    if rng.random() < cfg.p_blur:
        out = gaussian_blur(out, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.p_downscale:
        out = downscale_upscale(out, rng.uniform(*cfg.downscale))
    if rng.random() < cfg.p_jpeg:
        out = jpeg_recompress(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out


def train_transform(
    crop: np.ndarray, preset: Preset, cfg: AugmentConfig, rng: np.random.Generator
) -> torch.Tensor:
    """Augment, then apply the eval preset: the only difference between a training and a served input."""
    return to_tensor(augment(crop, rng, cfg), preset)
