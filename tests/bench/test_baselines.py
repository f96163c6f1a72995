"""bench.baselines.camera_photos makes the large photos of make bench's large-photo rows."""

import pandas as pd
from PIL import Image

from bench.baselines import camera_photos
from conftest import CLASS_COLOURS, photo


def test_camera_photos_are_the_photos_at_camera_size_in_split_and_label_folders(tmp_path):
    uris = []
    for name, size in (("tall", (300, 400)), ("wide", (400, 300))):
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(photo(CLASS_COLOURS["red"], 0, size))
        uris.append(str(path))
    rows = pd.DataFrame({"uri": uris, "split": ["train", "test"], "label": ["a", "b"]})
    folder = camera_photos(rows, tmp_path / "camera")
    with Image.open(folder / "train" / "a" / "tall.jpg") as tall:
        assert (tall.format, tall.size) == ("JPEG", (3024, 4032))
    with Image.open(folder / "test" / "b" / "wide.jpg") as wide:
        assert (wide.format, wide.size) == ("JPEG", (4032, 3024))
