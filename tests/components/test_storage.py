"""Local paths, gs:// and s3:// through one storage layer, against real emulators on loopback:
fake-gcs-server (GCS, with its generation preconditions) and moto's S3 server (the protocol
MinIO speaks, with conditional writes)."""

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from conftest import write_colour_tree
from imgclf.components import manifest, storage
from imgclf.components.data.ingest import ingest
from imgclf.components.data.validate import validate
from imgclf.components.parameters import IngestSettings, ValidationRules


def test_bucket_uris_split_and_join():
    assert storage.split_bucket_uri("gs://bucket/a/b.png") == ("gs", "bucket", "a/b.png")
    assert storage.split_bucket_uri("s3://bucket/a/b.png") == ("s3", "bucket", "a/b.png")
    assert storage.join("gs://bucket/a/", "b", "c.png") == "gs://bucket/a/b/c.png"
    assert storage.join("minio://mlpipeline/v2", "run") == "minio://mlpipeline/v2/run"
    assert storage.is_remote("s3://b/k") and storage.is_remote("minio://b/k")
    assert not storage.is_remote("/data/s3://x") and not storage.is_remote("rel/x")


def test_a_bucket_gives_the_same_manifest_as_the_local_tree(bucket, tmp_path):
    tree = write_colour_tree(tmp_path / "items", per_class=6)
    (tree / "red" / ".hidden.png").write_bytes(b"x")
    bucket.put_tree(tree, "shop/items")

    from_bucket = ingest(
        IngestSettings(f"{bucket.root}/shop/items"), str(tmp_path / "bucket-manifest")
    )
    from_disk = ingest(IngestSettings(str(tree)), str(tmp_path / "disk-manifest"))

    assert from_bucket["uri"].str.startswith(f"{bucket.root}/shop/items/").all()
    relative = {
        "bucket": from_bucket.assign(uri=from_bucket["uri"].str.removeprefix(f"{bucket.root}/")),
        "disk": from_disk.assign(uri=from_disk["uri"].str.removeprefix(f"{tmp_path}/")),
    }
    relative["disk"]["uri"] = "shop/" + relative["disk"]["uri"]
    pd.testing.assert_frame_equal(relative["bucket"], relative["disk"])

    result = validate(
        str(tmp_path / "bucket-manifest"),
        str(tmp_path / "validated"),
        str(tmp_path / "report.html"),
        ValidationRules(min_side=16, min_images_per_class=1, max_invalid_fraction=0.0),
    )
    assert result.quarantined == 0
    assert len(manifest.read(tmp_path / "validated")) == 18


def test_a_missing_bucket_prefix_is_a_clear_error(bucket, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{bucket.root}/nothing"):
        ingest(IngestSettings(f"{bucket.root}/nothing"), str(tmp_path / "manifest"))


def test_a_listing_in_a_bucket_resolves_relative_uris_there(bucket, tmp_path):
    tree = write_colour_tree(tmp_path / "items", per_class=3)
    bucket.put_tree(tree, "shop/items")
    rows = [
        f"{p.relative_to(tree).as_posix()},{p.parent.name}" for p in sorted(tree.rglob("*.png"))
    ]
    bucket.put("shop/items/listing.csv", "\n".join(["uri,label", *rows]) + "\n")
    listing = f"{bucket.root}/shop/items/listing.csv"
    from_listing = ingest(IngestSettings(listing), str(tmp_path / "a"))
    from_folders = ingest(IngestSettings(f"{bucket.root}/shop/items"), str(tmp_path / "b"))
    pd.testing.assert_frame_equal(from_listing, from_folders)

    bucket.put("shop/items/escape.csv", "uri,label\n../../x.png,red\n")
    with pytest.raises(ValueError, match="points outside"):
        ingest(IngestSettings(f"{bucket.root}/shop/items/escape.csv"), str(tmp_path / "c"))


def test_minio_uris_are_objects_on_the_s3_endpoint(s3_bucket):
    """Kubeflow Pipelines names artifacts on its bundled MinIO ``minio://BUCKET/KEY``
    (kubeflow/pipelines backend/src/v2/objectstore/object_store.go: the ``minio://`` scheme
    opens an S3 bucket at the configured MinIO endpoint)."""
    name = s3_bucket.root.removeprefix("s3://")
    storage.write_bytes(f"minio://{name}/run/ingest/manifest.csv", b"uri,label\n")
    assert s3_bucket.read("run/ingest/manifest.csv") == b"uri,label\n"
    assert storage.list_files(f"minio://{name}/run") == ["ingest/manifest.csv"]


def test_only_one_writer_creates_a_file(bucket, tmp_path):
    for root in (f"{bucket.root}/claims", str(tmp_path / "claims")):
        with ThreadPoolExecutor(8) as pool:
            created = list(pool.map(storage.create_exclusively, [f"{root}/1"] * 8))
        assert created.count(True) == 1, root


def test_concurrent_updates_are_never_lost(bucket, tmp_path):
    """Each writer appends its line under a condition on what it read (GCS generation, S3
    ETag, a local flock); writers that lose the race read again. Every line survives."""
    for uri in (f"{bucket.root}/log.txt", str(tmp_path / "log.txt")):

        def append(line: int, uri: str = uri) -> None:
            storage.update(uri, lambda text: (text or b"") + f"{line}\n".encode())

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(append, range(12)))
        lines = storage.read_bytes(uri).decode().split()
        assert sorted(map(int, lines)) == list(range(12)), uri


def test_a_mirror_holds_what_the_folder_holds_and_no_more(bucket, tmp_path):
    folder = tmp_path / "checkpoints"
    (folder / "head").mkdir(parents=True)
    (folder / "head" / "latest.weights.h5").write_bytes(b"epoch 1")
    (folder / "head" / "training_metadata.json").write_text('{"epoch": 0}')
    mirror = f"{bucket.root}/run/train/checkpoints"
    storage.mirror_folder(folder, mirror)
    (folder / "head" / "training_metadata.json").unlink()
    (folder / "head-finished.json").write_text("{}")
    storage.mirror_folder(folder, mirror)
    assert storage.list_files(mirror) == ["head-finished.json", "head/latest.weights.h5"]
    restored = storage.download_folder(mirror, tmp_path / "restored")
    assert (restored / "head" / "latest.weights.h5").read_bytes() == b"epoch 1"


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("s3:/typo", "is not a s3://BUCKET/PATH URI"),
        ("s3://Bucket/x", "is not a s3://BUCKET/PATH URI"),
        ("s3://under_score/x", "is not a s3://BUCKET/PATH URI"),
        ("minio:/mlpipeline", "is not a minio://BUCKET/PATH URI"),
        ("ftp://host/photos", "the scheme ftp: is not supported"),
        ("https://host/photos", "the scheme https: is not supported"),
        ("gs:/photos", "is not a gs://BUCKET/PATH URI"),
        ("gs://Photos/x", "is not a gs://BUCKET/PATH URI"),
        ("gs://", "is not a gs://BUCKET/PATH URI"),
        ("", "an empty location"),
    ],
)
def test_a_location_of_an_unknown_or_malformed_scheme_is_refused_in_one_sentence(uri, reason):
    error = storage.location_error(uri)
    assert reason in error and error.endswith(f"supported: {storage.SUPPORTED}.")
    assert error.count(". ") == 0


@pytest.mark.parametrize(
    "uri",
    [
        "gs://photos",
        "gs://photos/a/b.png",
        "s3://photos/a/b.png",
        "s3://my.bucket-1/models",
        "minio://mlpipeline/v2/artifacts",
        "/data/x",
        "rel/x",
        "./a:b",
    ],
)
def test_local_paths_and_bucket_uris_are_locations(uri):
    assert storage.location_error(uri) is None


def test_an_update_that_lost_the_race_is_applied_again_to_the_winners_content(bucket):
    """Another writer lands between our read and our write: the store refuses our write (GCS
    ``ifGenerationMatch``, S3 ``If-Match``) and the change is made again on what it wrote."""
    uri = f"{bucket.root}/models.config"
    storage.write_bytes(uri, b"a")
    seen = []

    def change(current):
        seen.append(current)
        if len(seen) == 1:
            bucket.put("models.config", b"theirs")
        return current + b"+ours"

    storage.update(uri, change)
    assert seen == [b"a", b"theirs"]
    assert storage.read_bytes(uri) == b"theirs+ours"
