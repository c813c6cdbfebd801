"""exonta.detect.overlay: burned-in time stamps and scale bars are found, blanked and left out."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from exonta.config import DetectParams
from exonta.detect import locate_frames
from exonta.detect.overlay import (
    MAX_AREA_FRACTION,
    OverlayCounts,
    drop_in_regions,
    excluded_pixels,
    fill_regions,
    find_overlay_regions,
    noise_sigma_outside,
    regions_mask,
)


def _clock(img: np.ndarray, i: int, value: int, org=(6, 16), scale=0.45) -> tuple[int, int, int, int]:
    """Draw a changing clock and frame counter; returns the text's bounding box (x0, y0, x1, y1)."""
    txt = f"00:{i / 30:06.3f} frame {i:04d}"
    cv2.putText(img, txt, org, cv2.FONT_HERSHEY_SIMPLEX, scale, value, 1, cv2.LINE_AA)
    (tw, th), base = cv2.getTextSize(txt, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return org[0], org[1] - th, org[0] + tw, org[1] + base


def _frames(n=24, shape=(160, 240), level=100.0, sigma=3.0, clock=None, spots=0, dtype=np.uint8, seed=0,
            top=255):
    """Noisy frames with moving clipped spots and, optionally, a clock of grey value ``clock``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    out = np.empty((n, h, w), dtype)
    box = None
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        f = level + sigma * rng.standard_normal(shape)
        for _ in range(spots):  # bright spots that clip, somewhere else in every frame
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            f += 3 * top * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
        f = np.clip(np.rint(f), 0, top).astype(dtype)
        if clock is not None:
            b = _clock(f, i, clock)
            box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
        out[i] = f
    return out, box


def _counts(frames) -> OverlayCounts:
    c = OverlayCounts.for_shape(frames.shape[1:], frames.dtype)
    for f in frames:
        c.add(f)
    return c


def _covers(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def test_a_changing_clock_is_found_and_clipped_moving_spots_are_not():
    frames, text = _frames(clock=255, spots=40)
    found = find_overlay_regions(_counts(frames), pad_px=4)
    assert not found.too_large and found.boxes
    union = (min(b[0] for b in found.boxes), min(b[1] for b in found.boxes),
             max(b[2] for b in found.boxes), max(b[3] for b in found.boxes))
    # the text's lit pixels are inside the boxes, and nothing far from the text is
    lit = (frames >= 250).mean(axis=0) >= 0.25  # the text's pixels, static or changing (a spot is not there that often)
    mask = regions_mask(frames.shape[1:], found.boxes)
    tx0, ty0, tx1, ty1 = text
    in_text = np.zeros_like(lit)
    in_text[max(ty0 - 2, 0):ty1 + 2, max(tx0 - 2, 0):tx1 + 2] = True
    assert (mask & ~in_text).sum() <= 4 * 2 * (union[2] - union[0] + union[3] - union[1])  # only the pad
    assert lit[in_text].sum() > 100 and mask[in_text & lit].all()
    assert union[2] < tx1 + 8 and union[3] < ty1 + 8
    # the same frames without the clock: no region
    plain, _ = _frames(clock=None, spots=40)
    assert find_overlay_regions(_counts(plain), 4).boxes == []


def test_black_is_not_an_overlay_in_a_dark_field_and_white_not_in_a_blown_out_one():
    dark, _ = _frames(level=1.0, sigma=1.0)  # fluorescence with zero camera offset: many pixels at 0
    assert find_overlay_regions(_counts(dark), 4).boxes == []
    dark_text, box = _frames(level=1.0, sigma=1.0, clock=255)
    assert find_overlay_regions(_counts(dark_text), 4).boxes  # white text on it is found
    bright = np.full((20, 100, 120), 255, np.uint8)
    bright[:, :, :40] = 150  # two thirds of the field clipped: its own level, nothing is flagged
    assert find_overlay_regions(_counts(bright), 4).boxes == []
    bright[:, :, :80] = 150  # a third clipped: a filled area, not strokes
    assert find_overlay_regions(_counts(bright), 4).boxes == []
    grid, _ = _frames(n=12)
    grid[:, ::16, :] = 255  # a counting grid drawn over the whole field: strokes, but far too large for an overlay
    grid[:, :, ::16] = 255
    found = find_overlay_regions(_counts(grid), 4)
    assert found.too_large and found.boxes == [] and found.area_fraction > MAX_AREA_FRACTION
    # black text on a bright-field background is found
    bf, box = _frames(level=160.0, clock=0)
    boxes = find_overlay_regions(_counts(bf), 4).boxes
    assert boxes and _covers((min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                              max(b[3] for b in boxes)), (box[0] + 1, box[1] + 2, box[2] - 1, box[3] - 2))


def test_a_scale_bar_label_in_12_bit_data_and_filled_or_central_shapes():
    frames, _ = _frames(level=300.0, sigma=10.0, dtype=np.uint16, top=4095)
    label = np.zeros(frames.shape[1:], np.uint8)  # (OpenCV draws text on 8-bit images only)
    cv2.putText(label, "10 um", (180, 150), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
    frames[:, label > 127] = 4095
    (tw, th), base = cv2.getTextSize("10 um", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    (x0, y0, x1, y1), = find_overlay_regions(_counts(frames), pad_px=3).boxes  # at the 12-bit white level
    assert x0 <= 180 and y0 <= 150 - th and x1 >= 180 + tw - 2 and y1 >= 150 + 1
    assert x1 <= 180 + tw + 6 and y1 <= 150 + base + 6
    frames[:, 140:144, 40:100] = 4095  # a filled bar: a blob, not strokes (static: the background holds it)
    frames[:, 78:80, 100:140] = 4095  # a thin line in the middle of the field
    assert len(find_overlay_regions(_counts(frames), pad_px=3).boxes) == 1


def test_too_few_frames_or_pixels_give_no_region():
    frames, _ = _frames(n=3, clock=255)
    assert find_overlay_regions(_counts(frames), 4).boxes == []
    frames, _ = _frames(n=12)
    frames[:, 50, 60] = 255  # one hot pixel
    assert find_overlay_regions(_counts(frames), 4).boxes == []


def test_regions_mask_excluded_pixels_and_drop_against_brute_force():
    rng = np.random.default_rng(3)
    h, w = 50, 70
    for _ in range(20):
        boxes = []
        for _ in range(rng.integers(0, 4)):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            boxes.append((x0, y0, int(x0 + rng.integers(1, 30)), int(y0 + rng.integers(1, 30))))
        edge = int(rng.integers(0, 6))
        ref = np.zeros((h, w), bool)
        for y in range(h):
            for x in range(w):
                ref[y, x] = any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)
        assert np.array_equal(regions_mask((h, w), boxes), ref)
        assert excluded_pixels((h, w), boxes, edge) == ref[edge:h - edge, edge:w - edge].sum()
        feats = pd.DataFrame({"x": rng.uniform(-0.5, w - 0.5, 300), "y": rng.uniform(-0.5, h - 0.5, 300)})
        kept = drop_in_regions(feats, boxes)
        inside = ref[np.rint(feats["y"]).astype(int).clip(0, h - 1), np.rint(feats["x"]).astype(int).clip(0, w - 1)]
        assert len(kept) == (~inside).sum()
        assert kept.index.equals(pd.RangeIndex(len(kept)))


def test_fill_is_background_plus_noise_and_independent_of_chunking():
    frames, _ = _frames(n=6, level=80.0, sigma=4.0)
    level = np.full(frames.shape[1:], 80.0, np.float32)
    boxes = [(10, 5, 60, 25)]
    sig = noise_sigma_outside(frames[0], level, boxes)
    assert sig == pytest.approx(4.0, rel=0.15)
    whole = fill_regions(frames, boxes, level, sig, 0)
    part = fill_regions(frames[3:], boxes, level, sig, 3)
    assert np.array_equal(whole[3:], part)  # frame i's noise depends on i only
    m = regions_mask(frames.shape[1:], boxes)
    assert np.array_equal(whole[:, ~m], frames[:, ~m])  # outside untouched
    inside = whole[:, m].astype(float)
    assert inside.mean() == pytest.approx(80.0, abs=0.3) and inside.std() == pytest.approx(sig, rel=0.1)
    assert fill_regions(frames, [], level, sig, 0) is frames


def test_locate_frames_drops_spots_inside_and_keeps_those_outside():
    rng = np.random.default_rng(5)
    h, w, n = 96, 128, 12
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((n, h, w), np.uint8)
    for i in range(n):
        f = 40 + 3 * rng.standard_normal((h, w))
        for cy, cx in ((20, 20), (20, 100), (70, 30), (70, 100)):
            f += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx - 0.3 * i) ** 2) / (2 * 1.5 ** 2))
        frames[i] = np.clip(np.rint(f), 0, 255)
    p = DetectParams(threshold_snr=6, background="none")
    free = locate_frames(frames, p)
    cut = locate_frames(frames, p, exclude_regions=[(80, 0, 128, 48)])
    assert ((free["x"] > 90) & (free["y"] < 40)).sum() == n  # the spot at (100, 20) is found without the region
    assert not ((cut["x"] >= 79.5) & (cut["y"] < 47.5)).any()
    far = (free["x"] < 60) | (free["y"] > 60)
    assert len(cut) == far.sum()
    np.testing.assert_allclose(np.sort(cut["x"].to_numpy()), np.sort(free.loc[far, "x"].to_numpy()), atol=1e-6)


def _rgb_counts(rgb: np.ndarray) -> OverlayCounts:
    """Counts as the pipeline makes them from colour frames (grey and colour of each)."""
    from exonta.io import frames_from_array

    v = frames_from_array(rgb)
    c = OverlayCounts.for_shape(v.frame_shape, v.dtype)
    for i in range(len(v)):
        c.add(*v.read_with_colour(i))
    return c


def _colour_clock(frames: np.ndarray, colour) -> tuple[np.ndarray, tuple]:
    """Grey frames as RGB with a changing clock drawn in ``colour`` (R, G, B); returns them and its box."""
    rgb = np.ascontiguousarray(np.repeat(frames[..., None], 3, axis=-1))
    box = None
    for i in range(len(rgb)):
        b = _clock(rgb[i], i, tuple(int(v) for v in colour))
        box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
    return rgb, box


@pytest.mark.parametrize("colour", [(255, 255, 0), (0, 255, 0), (0, 255, 255), (255, 0, 0)])
def test_a_clock_in_colour_is_found_in_colour_frames(colour):
    """Yellow (grey 226), green (150), cyan (179) and red (76) text is at no extreme grey level; its colour
    finds it, and the same text in an unsaturated colour (no channel at the top level) is not taken."""
    grey, _ = _frames(clock=None, spots=40)
    rgb, text = _colour_clock(grey, colour)
    gray_only = _counts(np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]))
    assert find_overlay_regions(gray_only, 4).boxes == []  # the grey levels alone do not find it
    found = find_overlay_regions(_rgb_counts(rgb), pad_px=4)
    assert not found.too_large and found.boxes
    union = (min(b[0] for b in found.boxes), min(b[1] for b in found.boxes),
             max(b[2] for b in found.boxes), max(b[3] for b in found.boxes))
    assert _covers(union, (text[0] + 1, text[1] + 2, text[2] - 1, text[3] - 2))
    assert union[2] < text[2] + 8 and union[3] < text[3] + 8
    # the same grey frames as RGB without text: no region (channel spread 0)
    assert find_overlay_regions(_rgb_counts(np.repeat(grey[..., None], 3, axis=-1)), 4).boxes == []
    # the same colour at 70 % (e.g. dark yellow 178, 178, 0): not saturated, not taken
    dim, _ = _colour_clock(grey, tuple(int(0.7 * v) for v in colour))
    assert find_overlay_regions(_rgb_counts(dim), 4).boxes == []


def test_colour_of_the_scene_is_not_an_overlay():
    """Coloured particles that move (green fluorescence filmed by a colour camera, clipping the green channel)
    are not overlays, on a tinted field or a neutral one; white text on the tinted field is still found."""
    rng = np.random.default_rng(5)
    n, h, w = 20, 160, 240
    yy, xx = np.mgrid[:h, :w]
    rgb = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        g = 60 + 3 * rng.standard_normal((h, w))
        for _ in range(30):  # green spots, somewhere else in every frame
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            g += 600 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5 ** 2))
        rgb[i, ..., 0] = np.clip(0.2 * g, 0, 255).astype(np.uint8)
        rgb[i, ..., 1] = np.clip(g, 0, 255).astype(np.uint8)
        rgb[i, ..., 2] = np.clip(0.3 * g, 0, 255).astype(np.uint8)
    counts = _rgb_counts(rgb)
    assert counts.n_colour_frames == n and counts.colour.max() > 0  # the spots are counted in colour ...
    assert find_overlay_regions(counts, 4).boxes == []  # ... but they move: not an overlay
    spots = rgb[..., 1] > 150
    for i in range(n):
        _clock(rgb[i], i, (255, 255, 255))
    assert find_overlay_regions(_rgb_counts(rgb), 4).boxes
    # a neutral field with the same moving spots in colour: nothing is flagged
    neutral = rgb.copy()
    base = np.repeat((60 + 3 * rng.standard_normal((n, h, w)))[..., None], 3, axis=-1)
    neutral[:] = np.clip(base, 0, 255).astype(np.uint8)
    neutral[spots] = (40, 250, 70)
    counts = _rgb_counts(neutral)
    assert counts.colour.max() > 0
    assert find_overlay_regions(counts, 4).boxes == []


def test_clipping_level_of_a_camera_with_fewer_bits_than_its_words():
    """12-bit data in 16-bit words clip at 4095: found when the sample stops exactly there with enough pixels;
    not for data that never reach 2^bits - 1, for a few pixels there, for full-range or 8-bit data."""
    from exonta.detect.overlay import MIN_PIXELS_AT_CLIP, OverlayCounts, clipping_level

    rng = np.random.default_rng(0)

    def counts(frames):
        c = OverlayCounts.for_shape(frames.shape[1:], frames.dtype)
        for f in frames:
            c.add(f)
        return c

    base = rng.integers(100, 3000, (4, 64, 64)).astype(np.uint16)
    clipped = base.copy()
    clipped[1, 10:13, 10:13] = 4095  # a clipped spot in one frame, 9 pixels
    assert clipping_level(counts(clipped)) == 4095.0
    few = base.copy()
    few[2, 5, 5:5 + MIN_PIXELS_AT_CLIP - 1] = 4095
    assert clipping_level(counts(few)) is None
    assert clipping_level(counts(base)) is None  # never reaches 4095: the type's largest value stays
    full = clipped.copy()
    full[3, 0, 0] = 40000  # real 16-bit data
    assert clipping_level(counts(full)) is None
    eight = np.clip(clipped // 16, 0, 255).astype(np.uint8)
    assert clipping_level(counts(eight)) is None
    fourteen = base.copy()
    fourteen[0, 20:25, 20:25] = 16383
    assert clipping_level(counts(fourteen)) == 16383.0
    left = clipped * 16  # the same 12-bit data left-aligned in 16-bit words: clips at 65520
    assert clipping_level(counts(left)) == 65520.0
    assert clipping_level(counts(base * 16)) is None  # never clips
    odd = left.copy()
    odd[0, 0, 0] += 1  # not left-aligned after all: 65520 is no clipping level
    assert clipping_level(counts(odd)) is None
