"""gs:// paths, against a stand-in for google-cloud-storage's client backed by a folder."""

from pathlib import Path

import pytest
from conftest import CLASS_COLOURS, write_colour_tree

from components import manifest, storage
from components.ingest import ingest
from components.validate import validate


class _Blob:
    def __init__(self, path: Path, name: str):
        self._path, self.name = path, name

    def download_as_bytes(self) -> bytes:
        return self._path.read_bytes()


class _Bucket:
    def __init__(self, root: Path):
        self._root = root

    def blob(self, name: str) -> _Blob:
        return _Blob(self._root / name, name)


class FolderBackedClient:
    """The part of ``google.cloud.storage.Client`` that storage uses: bucket = subfolder."""

    def __init__(self, root: Path):
        self._root = root

    def bucket(self, name: str) -> _Bucket:
        return _Bucket(self._root / name)

    def list_blobs(self, bucket: str, prefix: str = "", max_results: int | None = None):
        base = self._root / bucket
        names = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        matching = [_Blob(base / n, n) for n in names if n.startswith(prefix)]
        return iter(matching[:max_results] if max_results else matching)


@pytest.fixture
def bucket_root(tmp_path, monkeypatch):
    root = tmp_path / "gcs"
    monkeypatch.setattr(storage, "gcs_client", lambda: FolderBackedClient(root))
    return root


def test_gcs_uris_split_and_join():
    assert storage.split_gcs_uri("gs://bucket/a/b.png") == ("bucket", "a/b.png")
    assert storage.join("gs://bucket/a/", "b", "c.png") == "gs://bucket/a/b/c.png"


def test_ingest_and_validate_read_a_bucket(bucket_root, tmp_path):
    write_colour_tree(bucket_root / "photos-bucket" / "shop" / "items", per_class=6)
    (bucket_root / "photos-bucket" / "shop" / "items" / "red" / ".hidden.png").write_bytes(b"x")

    frame = ingest("gs://photos-bucket/shop/items", str(tmp_path / "manifest"))

    assert len(frame) == 18
    assert frame["uri"].str.startswith("gs://photos-bucket/shop/items/").all()
    assert set(frame["label"]) == set(CLASS_COLOURS)
    assert set(frame["format"]) == {"PNG"}
    result = validate(
        str(tmp_path / "manifest"),
        str(tmp_path / "validated"),
        str(tmp_path / "report.html"),
        min_side=16,
        min_images_per_class=1,
        max_invalid_fraction=0.0,
    )
    assert result.quarantined == 0
    assert len(manifest.read(tmp_path / "validated")) == 18


def test_a_missing_bucket_prefix_is_a_clear_error(bucket_root, tmp_path):
    (bucket_root / "empty-bucket").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="gs://empty-bucket/nothing"):
        ingest("gs://empty-bucket/nothing", str(tmp_path / "manifest"))
