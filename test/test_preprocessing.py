"""motus_core.preprocessing against hand-computed reference images and arrays.

Every expected value below is worked out by hand from the official Motus rules
(``data/utils/multi_camera_concat.py``, ``data/utils/image_utils.py``, ``data/utils/norm.py``):
T mosaic (high on top, wrists at half size below), resize-with-padding with
``scale = min(H/h, W/w)``, ``new = int(size * scale)``, offsets ``(target - new) // 2``, black
padding; ``x / 255`` channels-first; ``(x - min) / (max - min)``.
"""
import json

import numpy as np
import pytest

from motus_core import preprocessing as pp


def solid(h, w, rgb):
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[:] = rgb
    return out


def blocks(h, w, values):
    """An image made of 2x2 blocks [[a, b], [c, d]] repeated: halving it averages each block."""
    a, b, c, d = values
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[0::2, 0::2] = a
    img[0::2, 1::2] = b
    img[1::2, 0::2] = c
    img[1::2, 1::2] = d
    return img


def test_mosaic_layout_480x640():
    lay = pp.MosaicLayout.for_high_camera(480, 640)
    assert lay.size_hw == (720, 640)
    assert lay.regions["high"] == pp.Rect(0, 0, 640, 480)
    assert lay.regions["left_wrist"] == pp.Rect(0, 480, 320, 240)
    assert lay.regions["right_wrist"] == pp.Rect(320, 480, 320, 240)


def test_mosaic_pixels_small():
    high = solid(4, 6, (10, 20, 30))
    # wrists 4x6 are halved to 2x3: a 2x2 block average (bilinear at exactly half the size)
    left = blocks(4, 6, (0, 100, 200, 40))  # -> (0+100+200+40)/4 = 85
    right = solid(4, 6, (200, 0, 0))
    m = pp.make_mosaic(high, left, right)
    expected = np.zeros((6, 6, 3), dtype=np.uint8)
    expected[:4] = (10, 20, 30)
    expected[4:, :3] = 85
    expected[4:, 3:] = (200, 0, 0)
    np.testing.assert_array_equal(m, expected)
    # by role, and the inverse split (wrists at their half size)
    m2 = pp.make_mosaic_from_roles({"high": high, "left_wrist": left, "right_wrist": right})
    np.testing.assert_array_equal(m, m2)
    parts = pp.split_mosaic(m, pp.MosaicLayout.for_high_camera(4, 6))
    np.testing.assert_array_equal(parts["high"], high)
    assert parts["left_wrist"].shape == (2, 3, 3) and np.all(parts["left_wrist"] == 85)


def test_mosaic_odd_sizes_tile_exactly():
    # 5x7 high: bottom row 5//2 = 2 tall, tiles 7//2 = 3 and 7 - 3 = 4 wide -> 7x7 mosaic
    lay = pp.MosaicLayout.for_high_camera(5, 7)
    assert lay.size_hw == (7, 7)
    assert lay.regions["left_wrist"] == pp.Rect(0, 5, 3, 2)
    assert lay.regions["right_wrist"] == pp.Rect(3, 5, 4, 2)
    m = pp.make_mosaic(solid(5, 7, (1, 1, 1)), solid(9, 9, (2, 2, 2)), solid(3, 3, (3, 3, 3)))
    assert m.shape == (7, 7, 3)
    assert np.all(m[5:, :3] == 2) and np.all(m[5:, 3:] == 3)
    assert pp.mosaic_layout_of((7, 7)) == lay
    assert pp.mosaic_layout_of((720, 640)) == pp.MosaicLayout.for_high_camera(480, 640)
    with pytest.raises(pp.PreprocessingError):
        pp.mosaic_layout_of((5, 7))  # no H with H + H//2 = 5


def test_resize_with_padding_real_mosaic():
    # 720x640 -> scale min(384/720, 320/640) = 0.5 -> 360x320, 12 black rows above and below
    img = solid(720, 640, (50, 100, 150))
    out = pp.resize_with_padding(img, (384, 320))
    assert out.shape == (384, 320, 3) and out.dtype == np.uint8
    assert np.all(out[:12] == 0) and np.all(out[372:] == 0)
    assert np.all(out[12:372] == (50, 100, 150))
    info = pp.padding_info((720, 640))
    assert info.scale == 0.5 and info.content == pp.Rect(0, 12, 320, 360)


def test_resize_with_padding_robotwin_mosaic_is_not_scaled():
    # RoboTwin 360x320 mosaic: scale min(384/360, 320/320) = 1 -> only padded (12 rows each side)
    img = blocks(360, 320, (0, 10, 20, 30))
    out = pp.resize_with_padding(img, (384, 320))
    np.testing.assert_array_equal(out[12:372], img)
    assert np.all(out[:12] == 0) and np.all(out[372:] == 0)


def test_resize_with_padding_wide_and_halving_averages():
    # 100x400 -> scale min(3.84, 0.8) = 0.8 -> 80x320 at row (384 - 80) // 2 = 152
    out = pp.resize_with_padding(solid(100, 400, (9, 9, 9)), (384, 320))
    assert np.all(out[:152] == 0) and np.all(out[232:] == 0) and np.all(out[152:232] == 9)
    # a 768x640 block image is exactly halved -> every pixel is the mean of its 2x2 block
    out = pp.resize_with_padding(blocks(768, 640, (0, 100, 200, 40)), (384, 320))
    assert np.all(out == 85)


def test_resize_size_uses_int_like_the_official_code():
    # int(h * scale) as in the official image_utils: 47 * (384 / 47) = 383.99999... -> 383 rows
    info = pp.padding_info((47, 10), (384, 320))
    assert info.content.height == int(47 * (384 / 47))
    assert info.content.y == (384 - info.content.height) // 2


def test_model_image_layout_regions_for_480x640_cameras():
    lay = pp.model_image_layout((480, 640))
    r = lay.regions
    assert r["high"] == pp.Rect(0, 12, 320, 240)
    assert r["left_wrist"] == pp.Rect(0, 252, 160, 120)
    assert r["right_wrist"] == pp.Rect(160, 252, 160, 120)
    # the full pipeline on solid cameras puts each colour in its region
    images = {"high": solid(480, 640, (255, 0, 0)), "left_wrist": solid(480, 640, (0, 255, 0)), "right_wrist": solid(480, 640, (0, 0, 255))}
    model = pp.motus_model_image(images)
    assert model.shape == (384, 320, 3)
    for role, rgb in (("high", (255, 0, 0)), ("left_wrist", (0, 255, 0)), ("right_wrist", (0, 0, 255))):
        assert np.all(r[role].crop(model) == rgb)
    assert np.all(model[:12] == 0) and np.all(model[372:] == 0)
    back = lay.split(model)
    assert back["left_wrist"].shape == (240, 320, 3) and np.all(back["left_wrist"] == (0, 255, 0))


def test_unit_tensor_conversion():
    img = np.array([[[0, 51, 255], [255, 0, 102]]], dtype=np.uint8)  # 1x2
    x = pp.to_unit_chw(img)
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [0.0, 0.2, 1.0], atol=1e-7)
    np.testing.assert_allclose(x[:, 0, 1], [1.0, 0.0, 0.4], atol=1e-7)
    np.testing.assert_array_equal(pp.from_unit_chw(x), img)
    np.testing.assert_array_equal(pp.from_unit_chw(np.full((3, 1, 1), 2.0)), [[[255, 255, 255]]])


def test_per_camera_images_from_a_mosaic():
    m = pp.make_mosaic(solid(480, 640, (255, 0, 0)), solid(480, 640, (0, 255, 0)), solid(480, 640, (0, 0, 255)))
    x = pp.mosaic_camera_images(m, ("high", "right_wrist"), (240, 320))
    assert x.shape == (2, 3, 240, 320)
    np.testing.assert_allclose(x[0, :, 120, 160], [1, 0, 0])
    # the right wrist tile (240x320) fits 240x320 exactly
    np.testing.assert_allclose(x[1, :, 0, 0], [0, 0, 1])
    with pytest.raises(pp.PreprocessingError):
        pp.mosaic_camera_images(m, ("top",), (240, 320))


def test_minmax_normalisation_by_hand():
    n = pp.MinMaxNormalizer([0.0, -1.0, 2.0], [2.0, 1.0, 2.0], name="t")
    x = np.array([[1.0, 0.5, 3.0], [2.0, -1.0, 2.0]])
    expected = np.array([[0.5, 0.75, 1.0], [1.0, 0.0, 0.0]])  # constant dim: range taken as 1
    np.testing.assert_allclose(n.normalize(x), expected)
    np.testing.assert_allclose(n.denormalize(expected), x)
    with pytest.raises(pp.PreprocessingError):
        n.normalize(np.array([np.nan, 0, 0]))
    with pytest.raises(pp.PreprocessingError):
        n.normalize(np.zeros(4))
    with pytest.raises(pp.PreprocessingError):
        pp.MinMaxNormalizer([1.0], [0.0])


def test_official_stats_and_stat_file_roundtrip(tmp_path):
    n = pp.load_stats(None, "aloha_agilex_2")
    assert n.dim == 14
    raw = json.loads(pp.DEFAULT_STATS_FILE.read_text())["aloha_agilex_2"]
    np.testing.assert_allclose(n.min, raw["min"])
    np.testing.assert_allclose(n.normalize(np.asarray(raw["max"])), np.where(np.asarray(raw["max"]) > np.asarray(raw["min"]), 1.0, 0.0))
    with pytest.raises(pp.PreprocessingError, match="no normalisation statistics"):
        pp.load_stats(None, "not_a_robot")
    f = tmp_path / "stat.json"
    pp.write_stats(f, "a", pp.MinMaxNormalizer([0, 0], [1, 2]), file_count=3)
    pp.write_stats(f, "b", pp.MinMaxNormalizer([1, 1], [2, 2]))
    data = json.loads(f.read_text())
    assert set(data) == {"a", "b"} and data["a"]["file_count"] == 3 and data["a"]["max"] == [1, 2]


def test_bad_images_are_clear_errors():
    with pytest.raises(pp.PreprocessingError, match="uint8"):
        pp.resize_with_padding(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(pp.PreprocessingError, match="shape"):
        pp.make_mosaic(np.zeros((4, 4), dtype=np.uint8), solid(4, 4, 0), solid(4, 4, 0))
    with pytest.raises(pp.PreprocessingError, match="missing"):
        pp.make_mosaic_from_roles({"high": solid(4, 4, 0)})
    with pytest.raises(pp.PreprocessingError):
        pp.check_state(np.array([0.0, np.inf]), 2)
