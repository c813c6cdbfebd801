"""exonta.detect.repeats: frames that repeat the frame before are found, and the distinct ones renumbered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exonta.detect import locate_frames
from exonta.detect.repeats import (
    AMBIGUOUS_SHARE,
    GAP_FACTOR,
    IRREGULAR_FRAMES,
    MAX_REPEAT_FRACTION,
    REPEAT_FRACTION,
    FrameChanges,
    confirm_near_repeats,
    drop_repeated,
    find_repeated_frames,
    frame_changes,
    spot_shifts_px,
)
from reference import repeats_ref


def _noisy(n, shape=(40, 56), dtype=np.uint8, seed=0, level=60.0, sigma=4.0):
    rng = np.random.default_rng(seed)
    f = level + sigma * rng.standard_normal((n, *shape))
    if np.dtype(dtype).kind == "f":
        return f.astype(dtype)
    return np.clip(np.rint(f), 0, np.iinfo(dtype).max).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_frame_changes_match_the_reference(dtype):
    frames = _noisy(7, shape=(13, 17), dtype=dtype)
    prev = _noisy(1, shape=(13, 17), dtype=dtype, seed=1)[0]
    for previous in (None, prev):
        for step in (1, 4):
            for boxes in ((), [(2, 0, 9, 5)], [(2, 0, 9, 5), (5, 3, 17, 9)]):  # overlapping rectangles too
                got = frame_changes(frames, previous, row_step=step, exclude_regions=boxes)
                want = repeats_ref.frame_changes(frames.tolist(), None if previous is None else previous.tolist(),
                                                 step, boxes)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert np.isnan(frame_changes(frames)[0]) and np.isfinite(frame_changes(frames)[1:]).all()


def test_frame_changes_accumulate_chunk_by_chunk_as_over_the_whole_video():
    frames = _noisy(23)
    acc = FrameChanges()
    for first in range(0, 23, 5):
        acc.add(first, frames[first:first + 5])
    np.testing.assert_allclose(acc.values, frame_changes(frames), equal_nan=True)
    with pytest.raises(ValueError, match="expected 23"):
        acc.add(30, frames[:2])


def _with_repeats(frames, pattern):
    """Frames written in the order ``pattern`` (indices into ``frames``)."""
    return frames[np.asarray(pattern)]


def test_every_picture_written_twice_halves_the_rate():
    base = _noisy(40)
    video = np.repeat(base, 2, axis=0)
    rep = find_repeated_frames(frame_changes(video))
    assert rep.n_repeated == 40 and rep.repeated[1::2].all() and not rep.repeated[0::2].any()
    assert rep.rate_factor == pytest.approx(0.5) and rep.regular and rep.max_offset_frames == pytest.approx(0.0)
    np.testing.assert_array_equal(rep.analysed_frames, np.arange(0, 80, 2))


def test_a_rate_conversion_is_regular_and_gives_the_camera_rate():
    base = _noisy(100)
    pattern = [j for i in range(100) for j in ((i, i) if i % 5 == 4 else (i,))]  # 25 -> 30 frames/s
    rep = find_repeated_frames(frame_changes(_with_repeats(base, pattern)))
    assert rep.n_repeated == 20 and rep.n_frames == 120
    assert rep.rate_factor == pytest.approx(100 / 120, rel=0.01) and rep.regular
    assert rep.max_offset_frames <= IRREGULAR_FRAMES


def test_dropped_frames_in_a_burst_are_irregular():
    base = _noisy(100)
    pattern = list(range(40)) + [39] * 6 + list(range(46, 100))  # six pictures lost, the last one held
    rep = find_repeated_frames(frame_changes(_with_repeats(base, pattern)))
    assert rep.n_repeated == 6 and rep.repeated[40:46].all()
    assert not rep.regular and rep.max_offset_frames > IRREGULAR_FRAMES


def test_no_repeats_in_a_noisy_video_and_none_in_a_still_one():
    assert find_repeated_frames(frame_changes(_noisy(50))).n_repeated == 0
    still = np.repeat(_noisy(1), 10, axis=0)
    rep = find_repeated_frames(frame_changes(still))
    assert rep.n_repeated == 0 and rep.rate_factor == 1.0
    assert find_repeated_frames(np.array([np.nan])).n_repeated == 0


def test_a_codecs_near_repeats_are_taken_when_the_changes_form_two_groups():
    base = _noisy(60).astype(np.float32)
    video = np.repeat(base, 2, axis=0)
    rng = np.random.default_rng(3)
    video[1::2] += rng.normal(0, 0.05 * 4.0, video[1::2].shape).astype(np.float32)  # rounding of the codec
    c = frame_changes(video)
    assert np.nanmax(c[1::2]) > 0  # not bit for bit
    rep = find_repeated_frames(c)
    assert rep.n_repeated == 60 and rep.repeated[1::2].all()


def test_repeats_that_changed_by_up_to_a_third_of_the_level_are_taken_below_a_gap():
    """H.264 codes a refinement of a repeated picture: its repeats change by up to ~0.37 of the distinct frames'
    level. Below a clear gap they are repeats; frames inside the gap band beyond its allowance break it."""
    rng = np.random.default_rng(8)
    distinct = rng.uniform(0.62, 1.4, 200)
    repeats = np.r_[rng.uniform(0.0, 0.30, 199), 0.37]
    c = np.full(401, np.nan)
    c[1::2], c[2::2] = distinct, repeats
    level = np.quantile(c[1:], 0.9)
    assert repeats.max() > REPEAT_FRACTION * level and repeats.max() * GAP_FACTOR < distinct.min()
    rep = find_repeated_frames(c)
    assert rep.n_repeated == 200 and rep.repeated[2::2].all() and rep.rate_factor == pytest.approx(0.5, rel=1e-3)
    # the low group spread up to the distinct frames: no gap, only the bit-for-bit repeat is taken
    filled = c.copy()
    filled[2::2] = np.linspace(0.05, MAX_REPEAT_FRACTION * GAP_FACTOR * 1.2, 200) * level
    filled[4] = 0.0
    assert find_repeated_frames(filled).n_repeated == 1


def _moving_spots(n, shape=(64, 96), n_spots=25, step_px=1.5, seed=0, sigma=3.0):
    """8-bit frames of Gaussian spots doing a random walk over a noisy background."""
    rng = np.random.default_rng(seed)
    h, w = shape
    pos = rng.uniform([6, 6], [w - 6, h - 6], (n_spots, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w), np.uint8)
    for i in range(n):
        img = 30.0 + sigma * rng.standard_normal(shape)
        for x, y in pos:
            img += 120.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.6 ** 2))
        out[i] = np.clip(np.rint(img), 0, 255)
        pos = np.clip(pos + rng.normal(0, step_px, pos.shape), 6, [w - 6, h - 6])
    return out


def test_h264_repeats_are_found_and_confirmed_by_still_spots(tmp_path):
    """Every picture written twice and encoded with x264 (CRF 18 and 28, B-frames): the repeats are the
    encoder's refinements of a picture it already sent, not bit-for-bit copies; they are found, and their
    spots did not move."""
    from exonta.io import open_video
    from ffmpeg_writer import write_h264

    base = _moving_spots(40, seed=4)
    for crf in (18, 28):
        path = write_h264(tmp_path / f"x2_{crf}.mp4", np.repeat(base, 2, axis=0), fps=60.0, crf=crf,
                          extra=("-bf", "3"))
        with open_video(path) as v:
            c = frame_changes(v[0:len(v)])
            feats = locate_frames(v, psf_sigma_px=1.6)
        rep = confirm_near_repeats(find_repeated_frames(c), c, feats)
        assert rep.n_repeated == 40 and rep.repeated[1::2].all() and rep.regular, (crf, np.round(c, 2))
        assert (c[1::2] > 0).any()  # not all bit for bit: the gap rule did part of the work
        shifts = spot_shifts_px(feats, np.arange(1, 80))
        assert np.nanmedian(shifts[0::2]) < 0.3 * np.nanmedian(shifts[1::2])


def test_changed_frames_whose_spots_moved_are_not_repeats(tmp_path):
    """A noise-only field through x264 at CRF 28: the coder changes some distinct frames much less than the others
    (one by 0.34 of the level, the next-smallest by 0.55), a gap the change alone would take for repeats. Only the
    bit-for-bit repeats are kept when the spots cannot confirm the rest; and on a video with spots, distinct
    frames flagged by the change alone are given back because their spots moved."""
    base = _moving_spots(30, seed=6)
    feats = locate_frames(base, psf_sigma_px=1.6)
    c = frame_changes(base)
    c[[5, 17]] = 0.2 * np.nanquantile(c, 0.9)  # two distinct frames a codec happened to change little
    c[[9]] = 0.0  # and a bit-for-bit repeat (its spots are there, moved: the change decides alone)
    rep = find_repeated_frames(c)
    assert rep.repeated[[5, 9, 17]].all()
    kept = confirm_near_repeats(rep, c, feats)
    assert kept.n_repeated == 1 and kept.repeated[9]
    # no spots to measure: the changed "repeats" are not confirmed either
    empty = feats.iloc[:0]
    assert confirm_near_repeats(rep, c, empty).n_repeated == 1


def test_a_continuous_spread_of_changes_takes_only_exact_repeats():
    """A noise-free dark field with a few moving particles: the change follows the motion and varies
    continuously from frame to frame; only frames that did not change at all are repeats."""
    rng = np.random.default_rng(5)
    c = np.concatenate([[np.nan], rng.uniform(0.02, 1.0, 199)])
    assert (c[1:] <= REPEAT_FRACTION * np.quantile(c[1:], 0.9)).any()  # some would pass the level alone
    assert ((c > REPEAT_FRACTION * 0.9) & (c < 0.4 * 0.9)).mean() > AMBIGUOUS_SHARE
    assert find_repeated_frames(c).n_repeated == 0
    c[[10, 50]] = 0.0
    rep = find_repeated_frames(c)
    assert rep.n_repeated == 2 and rep.repeated[[10, 50]].all()


def test_a_clock_drawn_afresh_on_repeated_pictures_is_left_out():
    """Capture software that writes a picture twice may still draw its time stamp anew on each copy: the
    repeats then change only inside the stamp, which the overlay step has found and excluded."""
    video = np.repeat(_noisy(40, shape=(48, 64)), 2, axis=0)
    box = (0, 0, 40, 10)
    for i in range(len(video)):  # a new "time stamp" pattern on every written frame
        video[i, :10, :40] = np.random.default_rng(100 + i).integers(0, 256, (10, 40), dtype=np.uint8)
    plain = find_repeated_frames(frame_changes(video))
    assert plain.n_repeated == 0  # the stamp alone changes by 0.7 of the distinct frames' level here
    acc = FrameChanges([box])
    for first in range(0, len(video), 16):
        acc.add(first, video[first:first + 16])
    rep = find_repeated_frames(acc.values)
    assert rep.n_repeated == 40 and rep.repeated[1::2].all() and rep.rate_factor == pytest.approx(0.5)
    assert np.all(acc.values[1::2] == 0.0)  # exact: the rest of each repeat is the same picture


def test_drop_repeated_renumbers_the_distinct_frames_and_keeps_the_video_frame():
    rep = find_repeated_frames(frame_changes(np.repeat(_noisy(4), 2, axis=0)))  # frames 1, 3, 5, 7 repeat
    feats = pd.DataFrame({"frame": [0, 1, 2, 3, 6, 7, 7], "x": np.arange(7.0), "y": 0.0})
    out = drop_repeated(feats, rep)
    assert out.columns.tolist() == ["frame", "video_frame", "x", "y"]
    assert out["frame"].tolist() == [0, 1, 3] and out["video_frame"].tolist() == [0, 2, 6]
    assert out["x"].tolist() == [0.0, 2.0, 4.0]
    assert feats["frame"].tolist() == [0, 1, 2, 3, 6, 7, 7]  # input unchanged
    none = find_repeated_frames(frame_changes(_noisy(8)))
    assert drop_repeated(feats, none) is feats


def test_locate_frames_fills_the_frame_changes_as_it_reads():
    frames = np.repeat(_noisy(30, shape=(48, 64)), 2, axis=0)
    acc = FrameChanges()
    locate_frames(frames, chunk_frames=7, frame_changes=acc)
    np.testing.assert_allclose(acc.values, frame_changes(frames), equal_nan=True)
    assert find_repeated_frames(acc.values).n_repeated == 30
