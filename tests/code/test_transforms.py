"""The shared preset and training augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfguard.transforms import (
    AugmentConfig,
    Preset,
    augment,
    colour_jitter,
    downscale_upscale,
    gaussian_blur,
    gaussian_noise,
    hflip,
    jpeg_recompress,
    to_batch,
    to_tensor,
    train_transform,
)

ALWAYS = AugmentConfig(p_flip=1, p_colour=1, p_noise=1, p_blur=1, p_downscale=1, p_jpeg=1)


def _crop(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth gradient with texture, so blur, resampling and JPEG all change it."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    base = np.stack(
        [ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 90.0)], -1
    )
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def test_eval_preset_converts_bgr_to_normalised_rgb() -> None:
    crop = np.zeros((32, 32, 3), np.uint8)
    crop[..., 0] = 255  # pure blue in BGR
    preset = Preset(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = to_tensor(crop, preset)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))  # R, G, B
    assert to_batch([crop, crop], preset).shape == (2, 3, 16, 16)


def test_eval_preset_uses_imagenet_statistics_by_default() -> None:
    crop = np.full((8, 8, 3), 128, np.uint8)
    x = to_tensor(crop, Preset(input_size=8))
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[:, 3, 3], expected)


def test_preset_dict_round_trip_and_input_checks() -> None:
    preset = Preset(input_size=128)
    assert Preset.from_dict(preset.to_dict()) == preset
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((8, 8, 3), np.float32), preset)


def test_augment_is_deterministic_given_the_seed() -> None:
    crop = _crop()
    first = augment(crop, np.random.default_rng(7), ALWAYS)
    again = augment(crop, np.random.default_rng(7), ALWAYS)
    other = augment(crop, np.random.default_rng(8), ALWAYS)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.uint8 and first.shape == crop.shape
    assert not np.array_equal(first, crop)
    preset = Preset(input_size=32)
    torch.testing.assert_close(
        train_transform(crop, preset, ALWAYS, np.random.default_rng(3)),
        train_transform(crop, preset, ALWAYS, np.random.default_rng(3)),
    )


def test_disabled_augmentations_leave_the_crop_unchanged() -> None:
    never = AugmentConfig(p_flip=0, p_colour=0, p_noise=0, p_blur=0, p_downscale=0, p_jpeg=0)
    crop = _crop()
    np.testing.assert_array_equal(augment(crop, np.random.default_rng(0), never), crop)


def test_each_augmentation_keeps_shape_dtype_and_changes_pixels() -> None:
    crop = _crop()
    rng = np.random.default_rng(0)
    outputs = {
        "flip": hflip(crop),
        "colour": colour_jitter(crop, rng, 0.2, 0.2, 0.2, 10.0),
        "noise": gaussian_noise(crop, rng, 5.0),
        "blur": gaussian_blur(crop, 1.0),
        "downscale": downscale_upscale(crop, 0.5),
        "jpeg": jpeg_recompress(crop, 30),
    }
    for name, out in outputs.items():
        assert out.dtype == np.uint8 and out.shape == crop.shape, name
        assert 0 < np.abs(out.astype(int) - crop).mean() < 60, name
    np.testing.assert_array_equal(outputs["flip"][:, 0], crop[:, -1])
