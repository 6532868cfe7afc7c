import numpy as np
import pytest

from edge_fer.tracker import Tracker, TrackerConfig, iou


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_ids_are_stable_and_new_faces_get_new_ids():
    t = Tracker(TrackerConfig(min_hits=1))
    assert t.update([(0, 0, 50, 50)])[0].id == 1
    tracks = t.update([(3, 2, 50, 50), (200, 200, 40, 40)])
    ids = {tr.box[0]: tr.id for tr in tracks}
    assert ids[3] == 1 and ids[200] == 2


def test_new_faces_need_confirmation_once_something_is_tracked():
    t = Tracker(TrackerConfig(min_hits=2))
    assert [tr.id for tr in t.update([(0, 0, 50, 50)])] == [1]  # start-up: reported at once
    assert [tr.id for tr in t.update([(0, 0, 50, 50), (300, 0, 40, 40)])] == [1]  # newcomer: tentative
    assert [tr.id for tr in t.active()] == [1, 2]
    assert [tr.id for tr in t.update([(0, 0, 50, 50), (302, 0, 40, 40)])] == [1, 2]  # confirmed


def test_lost_tracks_end_after_max_misses():
    t = Tracker(TrackerConfig(max_misses=1, coast=0))
    t.update([(0, 0, 50, 50)])
    assert t.update([]) == []          # missed once: kept but not reported
    assert len(t.tracks) == 1
    assert t.update([(1, 1, 50, 50)])[0].id == 1  # found again: same id
    t.update([])
    t.update([])
    assert t.tracks == []


def test_ema_and_window_smoothing():
    ema = Tracker(TrackerConfig(smoothing="ema", alpha=0.5))
    track = ema.update([(0, 0, 10, 10)])[0]
    ema.smooth(track, np.array([1.0, 0.0]))
    np.testing.assert_allclose(ema.smooth(track, np.array([0.0, 1.0])), [0.5, 0.5])
    win = Tracker(TrackerConfig(smoothing="window", window=2))
    track = win.update([(0, 0, 10, 10)])[0]
    for p in ([1.0, 0.0], [0.0, 1.0], [0.0, 1.0]):
        out = win.smooth(track, np.array(p))
    np.testing.assert_allclose(out, [0.0, 1.0])
    with pytest.raises(ValueError):
        Tracker(TrackerConfig(smoothing="median"))


def test_confirmed_face_coasts_through_one_missed_detection():
    t = Tracker(TrackerConfig(coast=1, max_misses=2))
    t.update([(0, 0, 50, 50)])
    assert [tr.id for tr in t.update([])] == [1]   # reported at its last box
    assert t.update([]) == []                      # missed twice: no longer reported
    t2 = Tracker(TrackerConfig(coast=1))
    t2.update([(0, 0, 50, 50)])
    t2.update([(0, 0, 50, 50), (300, 0, 40, 40)])  # tentative newcomer
    assert [tr.id for tr in t2.update([(0, 0, 50, 50)])] == [1]  # an unconfirmed face does not coast
