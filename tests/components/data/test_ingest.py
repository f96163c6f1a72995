import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from conftest import (
    CLASS_COLOURS,
    LABEL_CORNERS,
    colour_image,
    needs_clothing,
    write_colour_tree,
    write_multi_label_set,
)
from imgclf.components import manifest
from imgclf.components.data.ingest import ingest
from imgclf.components.data.sample import SAMPLE_DIGITS
from imgclf.components.data.snapshot import snapshot_of_run
from imgclf.components.data.splits import hash_split
from imgclf.components.parameters import IngestSettings


def test_class_folders_get_deterministic_content_hash_splits(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=30)
    first = ingest(IngestSettings(str(tree)), str(tmp_path / "a"))
    second = ingest(IngestSettings(str(tree)), str(tmp_path / "b"))

    assert list(first.columns) == manifest.COLUMNS
    assert len(first) == 90
    assert set(first["label"]) == set(CLASS_COLOURS)
    assert set(first["split"]) == {"train", "validation", "test"}
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (
        tmp_path / "b" / "manifest.csv"
    ).read_bytes()
    pd.testing.assert_frame_equal(first, second)
    row = first.iloc[0]
    assert row["format"] == "PNG" and (row["width"], row["height"]) == (40, 48)
    assert (
        row["bytes"]
        == (tmp_path / "data" / row["label"] / row["uri"].split("/")[-1]).stat().st_size
    )


def test_identical_files_share_a_split(tmp_path):
    data = colour_image((1, 2, 3), seed=7)
    for label in ("a", "b"):
        for i in range(3):
            (tmp_path / "d" / label).mkdir(parents=True, exist_ok=True)
            (tmp_path / "d" / label / f"{i}.png").write_bytes(data)
    frame = ingest(IngestSettings(str(tmp_path / "d")), str(tmp_path / "out"))
    assert frame["split"].nunique() == 1


def test_split_folders_are_honoured_with_aliases(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=4, splits=("train", "val", "test"))
    frame = ingest(IngestSettings(str(tree)), str(tmp_path / "out"))
    assert manifest.counts_by_split(frame) == {"train": 12, "validation": 12, "test": 12}
    assert set(frame[frame["split"] == "validation"]["uri"].str.split("/").str[-3]) == {"val"}


def test_files_outside_class_folders_and_hidden_files_are_skipped(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=3)
    (tree / "README.md").write_text("not a class")
    (tree / "red" / ".DS_Store").write_bytes(b"finder junk")
    frame = ingest(IngestSettings(str(tree)), str(tmp_path / "out"))
    assert len(frame) == 9
    assert not frame["uri"].str.contains("README|DS_Store").any()


def test_unreadable_files_are_listed_for_validation_to_judge(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=3)
    (tree / "red" / "notes.png").write_text("not an image")
    frame = ingest(IngestSettings(str(tree)), str(tmp_path / "out"))
    broken = frame[frame["uri"].str.endswith("notes.png")].iloc[0]
    assert broken["format"] == "" and pd.isna(broken["width"])


def test_sample_digits_renders_the_bundled_dataset(tmp_path):
    frame = ingest(IngestSettings(SAMPLE_DIGITS), str(tmp_path / "out"))
    assert len(frame) == 1797
    assert sorted(frame["label"].unique()) == [str(d) for d in range(10)]
    assert set(frame["format"]) == {"PNG"}
    assert frame["uri"].str.startswith(str(tmp_path / "out" / "sample-digits")).all()


def test_the_sample_is_read_where_it_was_rendered_and_recorded_where_the_artifact_will_be(
    tmp_path, bucket
):
    """KFP's v2 launcher uploads a step's output artifacts to their URIs only after the step
    exits (kubeflow/pipelines backend/src/v2/component/launcher_v2.go, ``executeV2``:
    ``execute`` runs the step, then ``uploadOutputArtifactsWithRetry``): ingest must read the
    images it renders from the artifact's local path, and record them under its URI for the
    steps that come after."""
    artifact_uri = f"{bucket.root}/pipeline-root/imgclf/ingest/manifest"
    frame = ingest(IngestSettings(SAMPLE_DIGITS), str(tmp_path / "out"), artifact_uri)
    assert len(frame) == 1797
    assert frame["uri"].str.startswith(f"{artifact_uri}/sample-digits/").all()
    assert bucket.names("") == set(), "the step wrote to the store itself"
    local = ingest(IngestSettings(SAMPLE_DIGITS), str(tmp_path / "local"))
    assert frame["sha256"].tolist() == local["sha256"].tolist()
    assert frame["split"].tolist() == local["split"].tolist()


def test_hash_split_respects_fractions():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    splits = pd.Series([hash_split(s, 0.7, 0.2) for s in shas]).value_counts(normalize=True)
    assert splits["train"] == pytest.approx(0.7, abs=0.03)
    assert splits["validation"] == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize(
    ("data_uri", "message"),
    [("sample:cats", "Unknown sample"), ("/nonexistent/images", "does not exist")],
)
def test_bad_sources_fail_with_a_clear_message(tmp_path, data_uri, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ingest(IngestSettings(data_uri), str(tmp_path / "out"))


def test_fractions_that_leave_no_test_split_are_refused(tmp_path):
    with pytest.raises(ValueError, match="leaves no test split"):
        ingest(
            IngestSettings(SAMPLE_DIGITS, train_fraction=0.9, validation_fraction=0.1),
            str(tmp_path / "out"),
        )


@needs_clothing
def test_shared_clothing_split_folders(tmp_path):
    from conftest import CLOTHING

    frame = ingest(IngestSettings(str(CLOTHING)), str(tmp_path / "out"))
    assert manifest.counts_by_split(frame) == {"train": 3068, "validation": 341, "test": 372}
    assert frame["label"].nunique() == 10


def test_every_class_with_three_images_gets_all_three_splits(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=3)
    frame = ingest(
        IngestSettings(str(tree), train_fraction=0.8, validation_fraction=0.1),
        str(tmp_path / "out"),
    )
    for label, rows in frame.groupby("label"):
        assert sorted(rows["split"]) == ["test", "train", "validation"], label
    again = ingest(
        IngestSettings(str(tree), train_fraction=0.8, validation_fraction=0.1),
        str(tmp_path / "again"),
    )
    pd.testing.assert_frame_equal(frame, again)


def test_a_class_of_two_keeps_its_hash_splits_and_no_validation_means_none(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=2)
    frame = ingest(
        IngestSettings(str(tree), train_fraction=0.9, validation_fraction=0.0),
        str(tmp_path / "out"),
    )
    expected = [hash_split(sha, 0.9, 0.0) for sha in frame["sha256"]]
    assert frame["split"].tolist() == expected
    tree = write_colour_tree(tmp_path / "more", per_class=4)
    frame = ingest(
        IngestSettings(str(tree), train_fraction=0.9, validation_fraction=0.0),
        str(tmp_path / "out2"),
    )
    assert set(frame["split"]) == {"train", "test"}
    assert frame.groupby("label")["split"].nunique().eq(2).all()


def test_train_and_test_folders_only_get_a_validation_split_carved_from_train(tmp_path, caplog):
    tree = write_colour_tree(tmp_path / "data", per_class=18, splits=("train", "test"))
    settings = IngestSettings(str(tree))
    first = ingest(settings, str(tmp_path / "first"))
    again = ingest(settings, str(tmp_path / "again"))
    pd.testing.assert_frame_equal(first, again)
    # 0.1 / (0.8 + 0.1) of each class's 18 train images: 2 per class; test is left alone.
    per_class = first.groupby(["label", "split"]).size().unstack()
    assert per_class["validation"].eq(2).all() and per_class["train"].eq(16).all()
    assert per_class["test"].eq(18).all()
    assert set(first.loc[first["split"] == "validation", "uri"].str.split("/").str[-3]) == {"train"}
    assert first.groupby("sha256")["split"].nunique().eq(1).all()
    assert "No validation split in the data: 6 of 54 train images moved" in caplog.text
    record = json.loads((tmp_path / "first" / "splits.json").read_text())
    assert record == {"validation_carved_from_train": 6}


def test_a_validation_split_cannot_be_carved_from_one_image_per_class(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=1, splits=("train", "test"))
    with pytest.raises(ValueError, match="no class has two distinct train images"):
        ingest(IngestSettings(str(tree)), str(tmp_path / "out"))
    frame = ingest(IngestSettings(str(tree), validation_fraction=0.0), str(tmp_path / "none"))
    assert set(frame["split"]) == {"train", "test"}


def _listing_rows(tree):
    return [
        (path.relative_to(tree).as_posix(), path.parent.name)
        for path in sorted(tree.rglob("*.png"))
    ]


def test_a_csv_listing_gives_the_same_manifest_as_the_folders(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=5)
    rows = _listing_rows(tree)
    lines = ["uri,label"] + [f"{uri},{label}" for uri, label in rows]
    (tree / "listing.csv").write_text("\n".join(lines) + "\n")

    from_listing = ingest(IngestSettings(str(tree / "listing.csv")), str(tmp_path / "a"))
    from_folders = ingest(IngestSettings(str(tree)), str(tmp_path / "b"))
    pd.testing.assert_frame_equal(from_listing, from_folders)


def test_a_jsonl_listing_with_splits_and_absolute_paths(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=4)
    records = [
        {
            "uri": str(tree / uri) if i % 2 else uri,
            "label": label,
            "split": ["train", "val", "test", "train"][i % 4],
        }
        for i, (uri, label) in enumerate(_listing_rows(tree))
    ]
    listing = tmp_path / "data" / "images.JSONL"
    listing.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    frame = ingest(IngestSettings(str(listing)), str(tmp_path / "out"))
    assert manifest.counts_by_split(frame) == {"train": 6, "validation": 3, "test": 3}
    assert frame["uri"].str.startswith(str(tree)).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("uri,label\n../../etc/passwd,cats\n", "line 2: '../../etc/passwd' points outside"),
        ("uri,label\na.png,\n", "line 2: every row needs a label"),
        ("uri,labels\na.png,cat|dog\nb.png, | \n", "line 3: every row needs at least one label"),
        ("uri,label,labels\na.png,cat,cat|dog\n", "line 2: has 'label' where"),
        ("uri,label,split\na.png,cat,holdout\n", "split 'holdout' is not one of"),
        ("uri,label,split\na.png,cat,train\nb.png,dog,\n", "a split for every row or for none"),
        ("uri,label\na.png,cat\nftp://host/b.png,dog\n", "line 3: 'ftp://host/b.png': the scheme"),
    ],
)
def test_bad_listings_are_refused_with_the_line(tmp_path, content, message):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "listing.csv").write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        ingest(IngestSettings(str(tmp_path / "data" / "listing.csv")), str(tmp_path / "out"))


def test_a_listing_naming_missing_files_says_which(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=2)
    (tree / "listing.csv").write_text("uri,label\nred/red-000.png,red\nred/gone.png,red\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 files cannot be read: .*red/gone.png"):
        ingest(IngestSettings(str(tree / "listing.csv")), str(tmp_path / "out"))


def test_multi_label_listings_give_a_labels_column_with_every_label_in_every_split(tmp_path):
    jsonl = ingest(
        IngestSettings(str(write_multi_label_set(tmp_path / "a", images=40))), str(tmp_path / "ja")
    )
    csv = ingest(
        IngestSettings(str(write_multi_label_set(tmp_path / "b", images=40, listing="labels.csv"))),
        str(tmp_path / "jb"),
    )

    assert list(jsonl.columns) == manifest.columns(jsonl)
    assert manifest.is_multi_label(jsonl) and "label" not in jsonl.columns
    assert jsonl.loc[jsonl["uri"].str.endswith("image-006.png"), "labels"].item() == (
        "blue|green|red"
    )
    # The same files listed two ways give the same labels and splits.
    columns = ["labels", "split", "sha256"]
    pd.testing.assert_frame_equal(jsonl[columns], csv[columns])
    per_label = manifest.per_label(jsonl)
    assert set(per_label["label"]) == set(LABEL_CORNERS)
    assert len(per_label) == sum(len(labels) for labels in manifest.label_sets(jsonl))
    for _, rows in per_label.groupby("label"):
        assert set(rows["split"]) == set(manifest.SPLITS)
    reread = manifest.read(tmp_path / "ja")
    pd.testing.assert_frame_equal(reread, jsonl, check_dtype=False)


def test_multi_label_rows_drop_repeats_and_refuse_the_separator_inside_a_label(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=2)
    listing = tree / "listing.jsonl"
    listing.write_text(
        json.dumps({"uri": "red/red-000.png", "labels": ["red", "warm", "red"]})
        + "\n"
        + json.dumps({"uri": "red/red-001.png", "labels": "warm | red"})
        + "\n"
    )
    frame = ingest(IngestSettings(str(listing)), str(tmp_path / "out"))
    assert frame["labels"].tolist() == ["red|warm", "red|warm"]

    listing.write_text(json.dumps({"uri": "red/red-000.png", "labels": ["red|warm"]}) + "\n")
    with pytest.raises(ValueError, match=re.escape("line 1: a label may not contain '|'")):
        ingest(IngestSettings(str(listing)), str(tmp_path / "out"))


def _age(files, when: datetime) -> None:
    for path in files:
        os.utime(path, (when.timestamp(), when.timestamp()))


def test_a_data_snapshot_reads_the_same_images_after_new_ones_arrive(tmp_path, caplog):
    tree = write_colour_tree(tmp_path / "data", per_class=4)
    snapshot = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
    _age(tree.rglob("*.png"), snapshot - timedelta(days=1))
    before = ingest(
        IngestSettings(str(tree), data_snapshot="2026-11-01T02:00:00Z"), str(tmp_path / "a")
    )

    arrived = tree / "red" / "arrived-later.png"
    arrived.write_bytes(colour_image((200, 0, 0), seed=99))
    _age([arrived], snapshot + timedelta(seconds=1))
    rerun = ingest(
        IngestSettings(str(tree), data_snapshot="2026-11-01T02:00:00Z"), str(tmp_path / "b")
    )
    latest = ingest(IngestSettings(str(tree)), str(tmp_path / "c"))

    pd.testing.assert_frame_equal(before, rerun)
    assert "1 files changed after the data snapshot 2026-11-01T02:00:00+00:00" in caplog.text
    assert len(latest) == len(before) + 1
    assert str(arrived) in set(latest["uri"])


def test_a_snapshot_without_a_zone_is_utc_and_one_before_every_file_is_refused(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=2)
    _age(tree.rglob("*.png"), datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc))
    assert (
        len(
            ingest(
                IngestSettings(str(tree), data_snapshot="2026-11-01T12:00:00"), str(tmp_path / "a")
            )
        )
        == 6
    )
    with pytest.raises(ValueError, match="No file was there at the data snapshot 2026-11-01T11"):
        ingest(IngestSettings(str(tree), data_snapshot="2026-11-01T11:59:59Z"), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="data_snapshot must be an ISO 8601 time"):
        ingest(IngestSettings(str(tree), data_snapshot="last tuesday"), str(tmp_path / "c"))


def test_the_sample_is_rendered_whatever_the_snapshot(tmp_path):
    frame = ingest(
        IngestSettings(SAMPLE_DIGITS, data_snapshot="2000-01-01T00:00:00Z"), str(tmp_path / "out")
    )
    assert len(frame) == 1797


@pytest.mark.parametrize(
    "data_snapshot, scheduled_at, expected",
    [
        ("2026-11-01T00:00:00Z", "2026-11-25T02:00:00Z", "2026-11-01T00:00:00Z"),
        ("", "2026-11-25T02:00:00Z", "2026-11-25T02:00:00Z"),
        ("", "", ""),
        # Backends before 2.17.0 pass the placeholder through unresolved.
        ("", "{{$.pipeline_job_schedule_time_utc}}", ""),
    ],
)
def test_a_run_reads_the_snapshot_asked_for_else_its_scheduled_time(
    data_snapshot, scheduled_at, expected
):
    assert snapshot_of_run(data_snapshot, scheduled_at) == expected


def test_a_snapshot_applies_to_a_bucket(tmp_path, bucket):
    for i in range(3):
        bucket.put(f"photos/red/{i}.png", colour_image((200, 0, 0), i))
    uploaded = max(bucket.fs.modified(bucket.key(f"photos/red/{i}.png")) for i in range(3))
    everything = ingest(
        IngestSettings(f"{bucket.root}/photos", data_snapshot="2100-01-01"), str(tmp_path / "a")
    )
    assert len(everything) == 3
    with pytest.raises(ValueError, match="No file was there"):
        before = (uploaded - timedelta(days=1)).isoformat()
        ingest(IngestSettings(f"{bucket.root}/photos", data_snapshot=before), str(tmp_path / "b"))
