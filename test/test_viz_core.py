"""motus_core.viz without ROS: un-mosaic, predicted/live matching, image decoding, golden renders."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from motus_core.preprocessing import MOSAIC_ROLES, Rect
from motus_core.viz.compare import FrameMatcher
from motus_core.viz.frames import Unmosaicer, VizInputError, split_prediction
from motus_core.images import ImageError, compressed_to_rgb, raw_to_rgb
from motus_core.viz.render import contact_sheet, image_difference, load_png, side_by_side
from test.viz_data import GOLDEN, assert_matches_golden, camera_image, model_frame, regions


def _prediction(k_frames=4, stamp=10.0, hw=(240, 320), chunk_id=7):
    frames = [model_frame(j + 1, hw) for j in range(k_frames)]
    times = [stamp + 0.2 * (j + 1) for j in range(k_frames)]
    views, warn = split_prediction(chunk_id=chunk_id, stamp=stamp, layout="motus_t_mosaic", camera_names=list(MOSAIC_ROLES),
                                   regions=regions(hw), frames=frames, frame_times=times, high_hw=hw,
                                   condition_frame=model_frame(0, hw), model="tiny_motus", mode="joint")
    return views, warn


# ------------------------------------------------------------------------------------ un-mosaic
@pytest.mark.parametrize("hw", [(240, 320), (480, 640)])
def test_unmosaic_recovers_each_camera(hw):
    views, warn = _prediction(1, hw=hw)
    assert warn == ""
    v = views.views[0]
    assert set(v) == set(MOSAIC_ROLES)
    # high camera at its native size; wrist cameras at the size they have inside the mosaic (half)
    assert v["high"].shape == (*hw, 3)
    assert v["left_wrist"].shape == (hw[0] // 2, hw[1] // 2, 3)
    for role in MOSAIC_ROLES:
        truth = camera_image(role, 1, hw)
        if role != "high":
            truth = cv2.resize(truth, (hw[1] // 2, hw[0] // 2), interpolation=cv2.INTER_LINEAR)
        err = np.abs(v[role].astype(int) - truth.astype(int)).mean()
        # 240x320 fits the model size 1:1; 480x640 goes through a 2x down/up-scale
        assert err < (1.0 if hw == (240, 320) else 25.0), (role, err)
    # the views are of the right camera (colour signature), not of a neighbour
    for role in MOSAIC_ROLES:
        means = v[role].reshape(-1, 3).mean(axis=0)
        assert int(np.argmax(means)) == {"high": 0, "left_wrist": 1, "right_wrist": 2}[role]


def test_unmosaic_follows_message_regions_when_they_differ():
    frame = model_frame(2)
    # a producer that stacked the cameras differently: three horizontal bands
    odd = [Rect(0, 0, 320, 128), Rect(0, 128, 320, 128), Rect(0, 256, 320, 128)]
    u = Unmosaicer("motus_t_mosaic", list(MOSAIC_ROLES), odd, (240, 320))
    v = u.split(frame)
    assert u.mismatch_reason
    assert v["left_wrist"].shape == (128, 320, 3)
    assert np.array_equal(v["right_wrist"], frame[256:384])


def test_unmosaic_single_layout_and_errors():
    img = camera_image("high", 0)
    assert Unmosaicer("single", ["high"]).split(img)["high"] is img
    with pytest.raises(VizInputError):
        Unmosaicer("single", ["high", "left_wrist"])
    with pytest.raises(VizInputError):
        Unmosaicer("tiles", ["high"])
    with pytest.raises(VizInputError):
        Unmosaicer("motus_t_mosaic", ["high", "left_wrist"])
    u = Unmosaicer("motus_t_mosaic", list(MOSAIC_ROLES), regions())
    with pytest.raises(VizInputError):
        u.split(np.zeros((0, 320, 3), np.uint8))
    with pytest.raises(VizInputError):
        u.split(np.zeros((100, 100), np.uint8))
    bad = [Rect(0, 0, 320, 400), *regions()[1:]]  # outside the frame
    with pytest.raises(VizInputError):
        Unmosaicer("motus_t_mosaic", list(MOSAIC_ROLES), bad).split(model_frame(0))
    f = [model_frame(0)] * 2
    with pytest.raises(VizInputError):  # times not increasing
        split_prediction(chunk_id=1, stamp=0.0, layout="motus_t_mosaic", camera_names=list(MOSAIC_ROLES), regions=regions(),
                         frames=f, frame_times=[1.0, 1.0])
    with pytest.raises(VizInputError):  # lengths differ
        split_prediction(chunk_id=1, stamp=0.0, layout="motus_t_mosaic", camera_names=list(MOSAIC_ROLES), regions=regions(),
                         frames=f, frame_times=[1.0])
    with pytest.raises(VizInputError):
        split_prediction(chunk_id=1, stamp=float("nan"), layout="motus_t_mosaic", camera_names=list(MOSAIC_ROLES),
                         regions=regions(), frames=f, frame_times=[1.0, 2.0])


# ------------------------------------------------------------------------------------- decoding
def test_raw_image_decoding():
    rgb = camera_image("high", 3, (6, 8))
    assert np.array_equal(raw_to_rgb(6, 8, "rgb8", 24, rgb.tobytes()), rgb)
    assert np.array_equal(raw_to_rgb(6, 8, "bgr8", 24, rgb[..., ::-1].copy().tobytes()), rgb)
    padded = np.zeros((6, 32), np.uint8)  # row padding: step 32 > 24
    padded[:, :24] = rgb.reshape(6, 24)
    assert np.array_equal(raw_to_rgb(6, 8, "rgb8", 32, padded.tobytes()), rgb)
    rgba = np.concatenate([rgb, np.full((6, 8, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(raw_to_rgb(6, 8, "rgba8", 32, rgba.tobytes()), rgb)
    mono = raw_to_rgb(6, 8, "mono8", 8, rgb[..., 0].copy().tobytes())
    assert np.array_equal(mono[..., 1], rgb[..., 0])
    for args in [(0, 8, "rgb8", 24, b""), (6, 8, "rgb8", 24, rgb.tobytes()[:-1]), (6, 8, "16UC1", 16, bytes(96)),
                 (6, 8, "rgb8", 10, rgb.tobytes()), (6, 8, "rgb8", 24, 12345)]:
        with pytest.raises(ImageError):
            raw_to_rgb(*args)
    ok, jpg = cv2.imencode(".png", rgb[..., ::-1])
    assert np.array_equal(compressed_to_rgb(jpg.tobytes(), "png"), rgb)
    with pytest.raises(ImageError):
        compressed_to_rgb(b"not a jpeg", "jpeg")


# ------------------------------------------------------------------------------------- matching
def test_matcher_pairs_frames_of_the_same_time():
    views, _ = _prediction(4, stamp=10.0)
    m = FrameMatcher(list(MOSAIC_ROLES), tolerance=0.02)
    m.add_prediction(views)
    live_stamps = np.arange(9.0, 11.5, 1 / 30)
    settled_all, done_all = [], []
    for i, t in enumerate(live_stamps):
        for r in MOSAIC_ROLES:
            if r == "right_wrist" and 10.5 < t < 10.7:
                continue  # a camera gap around the 3rd frame (10.6 s)
            m.add_live(r, float(t), camera_image(r, i))
        s, d = m.poll()
        settled_all += s
        done_all += d
    assert [c.index for c in settled_all] == [0, 1, 2, 3]
    assert len(done_all) == 1 and len(done_all[0].comparisons) == 4
    for c in settled_all:
        for r, st in c.live_stamps.items():
            if st is not None:
                assert abs(st - c.time) <= 0.02
                # the frame stored under the stamp is the one published with it
                i = int(np.argmin(np.abs(live_stamps - st)))
                assert np.array_equal(c.live[r], camera_image(r, i))
    third = settled_all[2]
    assert third.live["right_wrist"] is None and third.live["high"] is not None
    assert m.stats.frames_matched == 4 and m.pending_frames == 0


def test_matcher_past_frames_quiet_camera_and_clock_reset():
    m = FrameMatcher(["high"], tolerance=0.02, max_wait=0.5)
    for i, t in enumerate(np.arange(0.0, 1.0, 1 / 30)):
        m.add_live("high", float(t), camera_image("high", i))
    # a slow prediction: its first frame time (0.2 s) already passed, the 2nd lies in the future
    views, _ = _prediction(2, stamp=0.0)
    views.times[:] = [0.2, 2.0]
    m.add_prediction(views)
    s, d = m.poll()
    assert [c.index for c in s] == [0] and s[0].matched and not d
    s, d = m.poll(now=2.4)  # camera silent, not yet max_wait past 2.0
    assert not s
    s, d = m.poll(now=2.6)
    assert len(s) == 1 and not s[0].matched and len(d) == 1
    # simulator reset: the clock jumps back; old history and pending predictions are dropped
    m.add_prediction(_prediction(1, stamp=5.0)[0])
    m.add_live("high", 3.0, camera_image("high", 0))
    m.add_live("high", 0.1, camera_image("high", 0))
    assert m.stats.time_resets == 1 and m.pending_frames == 0


# --------------------------------------------------------------------------------- golden images
def test_golden_contact_sheet_and_comparison():
    views, _ = _prediction(4, stamp=10.0)
    live = [{r: camera_image(r, 6 * (j + 1)) if not (r == "left_wrist" and j == 2) else None for r in MOSAIC_ROLES} for j in range(4)]
    sheet = contact_sheet(views, live, tile_width=96)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert_matches_golden(sheet, "contact_sheet.png")
    m = FrameMatcher(list(MOSAIC_ROLES), tolerance=0.02)
    m.add_prediction(views)
    for i, t in enumerate(np.arange(10.0, 10.5, 1 / 30)):
        for r in MOSAIC_ROLES:
            m.add_live(r, float(t), camera_image(r, i))
    c = m.poll()[0][0]
    assert_matches_golden(side_by_side(c, tile_height=96), "comparison.png")


def test_golden_comparison_catches_a_changed_render():
    """The tolerance of the golden check is not so loose that a wrong view passes."""
    views, _ = _prediction(4, stamp=10.0)
    live = [{r: camera_image(r, 6 * (j + 1)) if not (r == "left_wrist" and j == 2) else None for r in MOSAIC_ROLES} for j in range(4)]
    swapped = [{"high": v["left_wrist"], "left_wrist": v["high"], "right_wrist": v["right_wrist"]} for v in views.views]
    views.views = swapped
    wrong = contact_sheet(views, live, tile_width=96)
    d = image_difference(wrong, load_png(GOLDEN / "contact_sheet.png"))
    assert not (d["mean_abs"] < 2.0 and d["frac_changed"] < 0.01), d
