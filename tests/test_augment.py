"""Augmentation: objects keep their identity, never merge, and the crops are reproducible."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi
from synthetic import touching_discs

from gruunet_cli.inference.instances import separated_foreground
from gruunet_cli.training.augment import (
    NO_AUGMENTATION,
    AugmentConfig,
    _warp,
    augmented_crop,
    choose_centre,
    object_brightness,
    source_coordinates,
)

STRONG = AugmentConfig(elastic_sigma=6.0)


@pytest.mark.parametrize("seed", range(25))
def test_objects_never_merge_nor_split_inside_the_crop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Objects 100 px from the frame edge: crops never reach the mirrored copies beyond it.
    labels = np.pad(touching_discs(rng, (120, 120), 30), 100)
    image = rng.random(labels.shape).astype(np.float32)
    crop = augmented_crop(rng, image, labels, 64, STRONG)
    assert set(np.unique(crop.labels)) <= set(np.unique(labels))
    components, n = ndi.label(crop.target, np.ones((3, 3)))  # 8-connected, as segment does
    border = np.zeros(crop.labels.shape, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    for c in range(1, n + 1):  # no component holds two objects: touching objects stay apart
        assert len(np.unique(crop.labels[components == c])) == 1
    for k in np.unique(crop.labels[crop.target > 0]):
        if (border & (crop.labels == k)).any():
            continue  # objects cut by the crop border may fall apart
        assert len(np.unique(components[(crop.labels == k) & (crop.target > 0)])) == 1, k
    np.testing.assert_array_equal(crop.target, separated_foreground(crop.labels))


def test_same_seed_same_crop() -> None:
    labels = touching_discs(np.random.default_rng(0), (100, 100), 20)
    image = np.random.default_rng(1).random(labels.shape).astype(np.float32)
    a = augmented_crop(np.random.default_rng(7), image, labels, 48, AugmentConfig())
    b = augmented_crop(np.random.default_rng(7), image, labels, 48, AugmentConfig())
    c = augmented_crop(np.random.default_rng(8), image, labels, 48, AugmentConfig())
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("crop", [32, 33])
def test_without_augmentation_a_crop_copies_pixels(crop: int) -> None:
    rng = np.random.default_rng(3)
    labels = np.zeros((200, 200), np.int32)
    labels[90:96, 95:99] = 4  # one small object: always wholly inside a crop centred in its box
    image = rng.random(labels.shape).astype(np.float32)
    out = augmented_crop(rng, image, labels, crop, NO_AUGMENTATION)
    # find where the crop came from: the object's top-left corner in the crop
    ys, xs = np.nonzero(out.labels == 4)
    y0, x0 = 90 - ys.min(), 95 - xs.min()
    np.testing.assert_array_equal(out.labels, labels[y0:y0 + crop, x0:x0 + crop])
    np.testing.assert_allclose(out.image[0], image[y0:y0 + crop, x0:x0 + crop], atol=1e-6)


def test_3d_stacks_are_augmented_in_plane() -> None:
    rng = np.random.default_rng(4)
    labels = np.stack([touching_discs(rng, (80, 80), 10) for _ in range(4)])
    image = rng.random(labels.shape).astype(np.float32)
    cfg = AugmentConfig(brightness=0.0, contrast=(1.0, 1.0))  # nothing drawn after the warp
    crop = augmented_crop(np.random.default_rng(4), image, labels, 40, cfg, in_plane=True)
    assert crop.image.shape == (1, 4, 40, 40) and crop.labels.shape == (4, 40, 40)
    # The same draws again: one in-plane warp, applied to every slice on its own.
    again = np.random.default_rng(4)
    centre = choose_centre(again, labels, None)
    centre = np.floor(centre) + (40 - 1) / 2 % 1
    coords = source_coordinates(again, centre, (40, 40), cfg)
    for z in range(4):
        np.testing.assert_allclose(crop.image[0, z], _warp(image[z], coords, 3), atol=1e-6)
        np.testing.assert_array_equal(crop.labels[z], _warp(labels[z].astype(np.int32), coords, 0))
    assert len({crop.image[0, z].tobytes() for z in range(4)}) == 4  # the slices stay different


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_is_a_gaussian_filter_of_the_unblurred_crop(dims: int) -> None:
    rng = np.random.default_rng(5)
    labels = touching_discs(rng, (100, 100), 20)
    if dims == 3:
        labels = np.stack([labels] * 3)
    image = rng.random(labels.shape).astype(np.float32)
    if dims == 3:
        image[1] = 0.0  # in-plane blur: the empty middle slice stays empty
    plain = AugmentConfig(brightness=0.0, contrast=(1.0, 1.0))  # no draws after the warp
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    sharp = augmented_crop(r1, image, labels, 48, plain)
    sigma = r1.uniform(0.0, 2.0)  # the draw the blurred crop makes right after the same warp
    soft = augmented_crop(r2, image, labels, 48, dataclasses.replace(plain, blur=2.0))
    expected = ndi.gaussian_filter(sharp.image[0], (0, sigma, sigma) if dims == 3 else sigma, mode="mirror")
    np.testing.assert_allclose(soft.image[0], expected, atol=1e-5)
    np.testing.assert_array_equal(soft.labels, sharp.labels)  # the targets are not blurred
    assert sigma > 0.1 and soft.image[0].std() < 0.8 * sharp.image[0].std()
    if dims == 3:
        assert not soft.image[0, 1].any()


def test_object_brightness_scales_each_object_above_the_background() -> None:
    """Hand-computed: uniform discs at 1.0 on a 0.1 background; inside each disc (5 px from its
    border, beyond the reach of the 1-px taper) the value is 0.1 + 0.9·f with f = 1 or f in [0.2, 0.5]; far
    background is untouched."""
    yy, xx = np.mgrid[:120, :120]
    labels = np.zeros((120, 120), np.int32)
    centres = [(20 + 40 * i, 20 + 40 * j) for i in range(3) for j in range(3)]
    for k, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2] = k
    image = np.where(labels > 0, 1.0, 0.1).astype(np.float32)
    out = object_brightness(np.random.default_rng(3), image, labels, (0.2, 0.5))
    scaled = 0
    for k in range(1, 10):
        inner = ndi.binary_erosion(labels == k, iterations=5)
        f = (out[inner] - 0.1) / 0.9
        np.testing.assert_allclose(f, f[0], atol=1e-5)  # one factor per object
        assert f[0] == pytest.approx(1.0, abs=1e-5) or 0.2 - 1e-5 <= f[0] <= 0.5 + 1e-5
        scaled += f[0] < 0.99
    assert 1 <= scaled <= 8  # about half the objects, with this seed neither none nor all
    far = ~ndi.binary_dilation(labels > 0, iterations=5)
    np.testing.assert_allclose(out[far], 0.1, atol=1e-6)


def test_object_intensity_in_a_crop_changes_the_image_only() -> None:
    rng = np.random.default_rng(2)
    labels = touching_discs(rng, (100, 100), 20)
    image = rng.random(labels.shape).astype(np.float32)
    plain = AugmentConfig(brightness=0.0, contrast=(1.0, 1.0))
    a = augmented_crop(np.random.default_rng(4), image, labels, 48, plain)
    b = augmented_crop(np.random.default_rng(4), image, labels, 48, dataclasses.replace(plain, object_intensity=(0.2, 1.0)))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.target, b.target)
    assert not np.allclose(a.image, b.image)
