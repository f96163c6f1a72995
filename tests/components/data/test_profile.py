import pandas as pd
import pytest

from imgclf.components.data import profile


def _profile(labels, side=100, brightness=0.5):
    kept = pd.DataFrame({"label": labels, "width": side, "height": side * 2})
    return profile.data_profile(kept, pd.Series([brightness] * len(labels)))


def test_profile_describes_labels_sizes_and_brightness():
    described = _profile(["a", "a", "b", "c"], side=50, brightness=0.25)
    assert described["images"] == 4
    assert described["label_distribution"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert described["shorter_side"]["median"] == 50
    assert described["brightness"] == {"mean": 0.25, "std": 0.0}


def test_drift_measures():
    base = _profile(["a", "b"], side=100, brightness=0.5)
    assert profile.drift(base, base) == {"label_tvd": 0, "size_shift": 0, "brightness_shift": 0}
    moved = _profile(["a", "a", "a", "b"], side=150, brightness=0.6)
    assert profile.drift(moved, base) == pytest.approx(
        {"label_tvd": 0.25, "size_shift": 0.5, "brightness_shift": 0.1}
    )
    assert profile.drift(_profile(["c"]), base)["label_tvd"] == 1.0


def test_profiles_round_trip(tmp_path):
    written = _profile(["x", "y"])
    profile.write(written, tmp_path)
    assert profile.read(tmp_path) == written
    assert profile.read(tmp_path / "elsewhere") is None
