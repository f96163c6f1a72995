"""gs:// paths against a real GCS emulator (gcp-storage-emulator) started by the test."""

import pandas as pd
import pytest

from conftest import write_colour_tree
from imgclf.components import manifest, storage
from imgclf.components.data.ingest import ingest
from imgclf.components.data.validate import validate
from imgclf.components.parameters import IngestSettings, ValidationRules


def _upload(tree, bucket, prefix):
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        bucket.blob(f"{prefix}/{path.relative_to(tree).as_posix()}").upload_from_filename(path)


def test_gcs_uris_split_and_join():
    assert storage.split_gcs_uri("gs://bucket/a/b.png") == ("bucket", "a/b.png")
    assert storage.join("gs://bucket/a/", "b", "c.png") == "gs://bucket/a/b/c.png"


def test_a_bucket_gives_the_same_manifest_as_the_local_tree(gcs_bucket, tmp_path):
    tree = write_colour_tree(tmp_path / "items", per_class=6)
    (tree / "red" / ".hidden.png").write_bytes(b"x")
    _upload(tree, gcs_bucket, "shop/items")

    from_bucket = ingest(
        IngestSettings("gs://photos/shop/items"), str(tmp_path / "bucket-manifest")
    )
    from_disk = ingest(IngestSettings(str(tree)), str(tmp_path / "disk-manifest"))

    assert from_bucket["uri"].str.startswith("gs://photos/shop/items/").all()
    relative = {
        "bucket": from_bucket.assign(uri=from_bucket["uri"].str.removeprefix("gs://photos/")),
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


def test_a_missing_bucket_prefix_is_a_clear_error(gcs_bucket, tmp_path):
    with pytest.raises(FileNotFoundError, match="gs://photos/nothing"):
        ingest(IngestSettings("gs://photos/nothing"), str(tmp_path / "manifest"))


def test_a_listing_in_a_bucket_resolves_relative_uris_there(gcs_bucket, tmp_path):
    tree = write_colour_tree(tmp_path / "items", per_class=3)
    _upload(tree, gcs_bucket, "shop/items")
    rows = [
        f"{p.relative_to(tree).as_posix()},{p.parent.name}" for p in sorted(tree.rglob("*.png"))
    ]
    gcs_bucket.blob("shop/items/listing.csv").upload_from_string(
        "\n".join(["uri,label", *rows]) + "\n"
    )
    from_listing = ingest(IngestSettings("gs://photos/shop/items/listing.csv"), str(tmp_path / "a"))
    from_folders = ingest(IngestSettings("gs://photos/shop/items"), str(tmp_path / "b"))
    pd.testing.assert_frame_equal(from_listing, from_folders)

    gcs_bucket.blob("shop/items/escape.csv").upload_from_string("uri,label\n../../x.png,red\n")
    with pytest.raises(ValueError, match="points outside"):
        ingest(IngestSettings("gs://photos/shop/items/escape.csv"), str(tmp_path / "c"))


def test_files_that_must_outlive_a_killed_step_go_where_this_code_can_write_at_once(caplog):
    local = "/tmp/outputs/checkpoints"
    assert storage.durable_location("gs://b/run/train/checkpoints", local).startswith("gs://")
    assert storage.durable_location("/mnt/runs/train/checkpoints", local).startswith("/mnt/")
    assert storage.durable_location("minio://b/run/train/checkpoints", local) == local
    assert "survive only if the step succeeds" in caplog.text


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("s3://bucket/models", "the scheme s3: is not supported"),
        ("s3:/typo", "the scheme s3: is not supported"),
        ("ftp://host/photos", "the scheme ftp: is not supported"),
        ("minio://mlpipeline/v2", "the scheme minio: is not supported"),
        ("gs:/photos", "is not a gs://BUCKET/PATH URI"),
        ("gs://Photos/x", "is not a gs://BUCKET/PATH URI"),
        ("gs://", "is not a gs://BUCKET/PATH URI"),
        ("", "an empty location"),
    ],
)
def test_a_location_of_an_unknown_or_malformed_scheme_is_refused_in_one_sentence(uri, reason):
    error = storage.location_error(uri)
    assert reason in error and error.endswith("supported: a local path or gs://BUCKET/PATH.")


@pytest.mark.parametrize("uri", ["gs://photos", "gs://photos/a/b.png", "/data/x", "rel/x", "./a:b"])
def test_local_paths_and_gs_uris_are_locations(uri):
    assert storage.location_error(uri) is None
