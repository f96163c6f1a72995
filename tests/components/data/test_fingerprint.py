"""The data fingerprint: the same for the same files, different for any change ingest would
see, and ingest refuses to read other files than the ones fingerprinted."""

import io
import os

import pytest
from PIL import Image

from imgclf.components.data.ingest import fingerprint, ingest
from imgclf.components.parameters import IngestSettings


def _png(colour, size=8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(2):
            path = tmp_path / "photos" / label / f"{i}.png"
            path.write_bytes(_png((i * 50, 0, 0)))
            os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    return tmp_path / "photos"


def test_fingerprint_is_stable_and_its_snapshot_is_the_newest_change(photos):
    settings = IngestSettings(data_uri=str(photos))
    first, second = fingerprint(settings), fingerprint(settings)
    assert first == second and first.files == 4
    assert first.snapshot == "2023-11-14T22:13:21+00:00"  # 1_700_000_001


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (p / "cat" / "0.png").write_bytes(_png((9, 9, 9), size=9)),
        lambda p: (p / "cat" / "0.png").rename(p / "dog" / "2.png"),  # relabelled
        lambda p: (p / "dog" / "0.png").unlink(),
    ],
    ids=["rewritten", "relabelled", "deleted"],
)
def test_any_change_ingest_would_see_changes_the_fingerprint(photos, change):
    settings = IngestSettings(data_uri=str(photos))
    before = fingerprint(settings)
    change(photos)
    assert fingerprint(settings).digest != before.digest


def test_ingest_as_of_the_fingerprint_snapshot_reads_what_was_fingerprinted(photos, tmp_path):
    found = fingerprint(IngestSettings(data_uri=str(photos), data_snapshot="2026-01-01T00:00:00Z"))
    settings = IngestSettings(data_uri=str(photos), data_snapshot=found.snapshot)
    frame = ingest(settings, str(tmp_path / "manifest"), expected_fingerprint=found.digest)
    assert len(frame) == 4


def test_ingest_refuses_files_other_than_the_fingerprinted(photos, tmp_path):
    found = fingerprint(IngestSettings(data_uri=str(photos)))
    (photos / "dog" / "old.png").write_bytes(_png((1, 2, 3)))
    os.utime(photos / "dog" / "old.png", (1_600_000_000, 1_600_000_000))  # an old mtime
    settings = IngestSettings(data_uri=str(photos), data_snapshot=found.snapshot)
    with pytest.raises(ValueError, match="changed between the fingerprint step and ingest"):
        ingest(settings, str(tmp_path / "manifest"), expected_fingerprint=found.digest)


def test_a_rewritten_object_changes_the_fingerprint_on_a_store(bucket):
    """On GCS and S3 the object's generation or ETag tells a rewrite apart even when size and
    time do not."""
    for label in ("cat", "dog"):
        bucket.put(f"photos/{label}/0.png", _png((10, 10, 10)))
    settings = IngestSettings(data_uri=f"{bucket.root}/photos")
    before = fingerprint(settings)
    assert fingerprint(settings) == before
    bucket.put("photos/cat/0.png", _png((20, 20, 20)))
    assert fingerprint(settings).digest != before.digest
