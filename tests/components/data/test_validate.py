import numpy as np
import pytest

from conftest import (
    CLASS_COLOURS,
    colour_image,
    encode_image,
    squares_image,
    write_colour_tree,
    write_multi_label_set,
)
from hostile import ACCEPTED, QUARANTINED, SKIPPED, add_corpus
from imgclf.components import artifacts, manifest
from imgclf.components.data.ingest import ingest
from imgclf.components.data.quarantine import inspect_image
from imgclf.components.data.validate import DataValidationError, validate
from imgclf.components.parameters import IngestSettings, ServingTarget, ValidationRules
from imgclf.components.serving.push import push


def _ingested(tmp_path, tree, train_fraction=0.6, validation_fraction=0.2):
    asked = IngestSettings(
        str(tree), train_fraction=train_fraction, validation_fraction=validation_fraction
    )
    ingest(asked, str(tmp_path / "manifest"))
    return str(tmp_path / "manifest")


def _validate(tmp_path, manifest_dir, serving_root=None, model_name=None, **rules):
    serving = ServingTarget(serving_root, model_name) if serving_root else None
    return validate(
        manifest_dir,
        str(tmp_path / "validated"),
        str(tmp_path / "report.html"),
        ValidationRules(**{"min_side": 16, "min_images_per_class": 3, **rules}),
        serving,
    )


def test_broken_files_are_quarantined_with_a_reason(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=20)
    (tree / "red" / "not-an-image.png").write_text("hello")
    whole = colour_image((200, 0, 0), seed=1)
    (tree / "green" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tree / "blue" / "empty.png").write_bytes(b"")
    (tree / "blue" / "tiny.png").write_bytes(colour_image((0, 0, 200), seed=2, size=(8, 8)))

    result = _validate(tmp_path, _ingested(tmp_path, tree), max_invalid_fraction=0.1)

    quarantined = manifest.read(tmp_path / "validated", artifacts.QUARANTINE)
    reasons = dict(
        zip(quarantined["uri"].str.split("/").str[-1], quarantined["reason"], strict=True)
    )
    assert set(reasons) == {"not-an-image.png", "truncated.png", "empty.png", "tiny.png"}
    assert reasons["empty.png"] == "empty file"
    assert reasons["not-an-image.png"].startswith("does not decode as an image: Unknown image")
    assert "{{" not in reasons["truncated.png"] and "Op:" not in reasons["truncated.png"]
    assert reasons["tiny.png"] == "8x8 is smaller than min_side=16"
    assert result.quarantined == 4
    kept = manifest.read(tmp_path / "validated")
    assert len(kept) == 60 and sum(result.images.values()) == 60
    report = (tmp_path / "report.html").read_text()
    assert "truncated.png" in report and "<svg" in report
    assert "src=" not in report and "href=" not in report  # self-contained for the KFP UI
    warnings = [r for r in result.rules if not r.passed]
    assert [r.severity for r in warnings] == ["warning"]


def test_too_many_broken_files_fail_with_one_sentence(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=10)
    for i in range(3):
        (tree / "red" / f"junk-{i}.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataValidationError) as failure:
        _validate(tmp_path, _ingested(tmp_path, tree), max_invalid_fraction=0.05)
    message = str(failure.value)
    assert message.count("Data validation failed") == 1
    assert "3 of 33 files quarantined (9.1%)" in message
    assert "max_invalid_fraction" in message
    assert (tmp_path / "report.html").exists()


def test_a_single_class_fails(tmp_path):
    tree = tmp_path / "data" / "only"
    tree.mkdir(parents=True)
    for i in range(10):
        (tree / f"{i}.png").write_bytes(colour_image((9, 9, 9), seed=i))
    with pytest.raises(DataValidationError, match="at least 2 classes, found 1"):
        _validate(tmp_path, _ingested(tmp_path, tmp_path / "data"))


def test_classes_short_of_train_images_are_named(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=4, splits=("train", "test"))
    for extra in range(6):
        (tree / "train" / "red" / f"more-{extra}.png").write_bytes(
            colour_image((200, 0, 0), seed=100 + extra)
        )
    with pytest.raises(DataValidationError) as failure:
        _validate(
            tmp_path, _ingested(tmp_path, tree, validation_fraction=0.0), min_images_per_class=8
        )
    assert "blue (4), green (4)" in str(failure.value)
    assert "red" not in str(failure.value).split("found")[1].split(";")[0]


def test_a_file_in_two_splits_is_dropped_from_the_later_split(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=4, splits=("train", "test"))
    original = tree / "train" / "red" / "red-000.png"
    (tree / "test" / "red" / "leaked.png").write_bytes(original.read_bytes())

    result = _validate(tmp_path, _ingested(tmp_path, tree, validation_fraction=0.0))

    assert result.duplicates_dropped == 1 and result.quarantined == 0
    assert result.images == {"train": 12, "validation": 0, "test": 12}
    kept = manifest.read(tmp_path / "validated")
    assert not kept["uri"].str.endswith("leaked.png").any()
    dropped = manifest.read(tmp_path / "validated", artifacts.QUARANTINE).iloc[0]
    assert dropped["uri"].endswith("test/red/leaked.png")
    assert dropped["reason"].startswith(f"identical to {original} in train: dropped from test")
    leakage = next(r for r in result.rules if "two splits" in r.rule)
    assert not leakage.passed and leakage.severity == "warning"


def test_class_imbalance_is_a_warning(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=4, splits=("train", "test"))
    for extra in range(40):
        (tree / "train" / "red" / f"more-{extra}.png").write_bytes(
            colour_image((200, 0, 0), seed=200 + extra)
        )
    result = _validate(
        tmp_path, _ingested(tmp_path, tree, validation_fraction=0.0), max_imbalance_ratio=10
    )
    imbalance = next(r for r in result.rules if "max_imbalance_ratio" in r.rule)
    assert not imbalance.passed and imbalance.severity == "warning"
    assert imbalance.observed == "fewest: blue (4), most: red (44)"


def test_labels_with_control_characters_fail(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=5)
    (tree / "green").rename(tree / "gr\x01een")
    with pytest.raises(DataValidationError, match=r"bad labels: 'gr\\x01een'"):
        _validate(tmp_path, _ingested(tmp_path, tree))


def test_multi_label_data_is_counted_per_label(tmp_path):
    listing = write_multi_label_set(tmp_path / "data", images=42)
    (tmp_path / "data" / "images" / "broken.png").write_bytes(b"not a png")
    with listing.open("a") as extra:
        extra.write('{"uri": "images/broken.png", "labels": ["red", "blue"]}\n')

    result = _validate(tmp_path, _ingested(tmp_path, listing))

    assert result.quarantined == 1
    kept = manifest.read(tmp_path / "validated")
    assert manifest.is_multi_label(kept) and len(kept) == 42
    quarantine = manifest.read(tmp_path / "validated", artifacts.QUARANTINE)
    assert quarantine["labels"].tolist() == ["blue|red"]
    short = next(r for r in result.rules if "min_images_per_class" in r.rule)
    train_images = (kept["split"] == "train").sum()
    # Each label is on 4 of the 7 label sets, so it has more train images than a third.
    assert short.passed and short.observed.startswith("fewest: ")
    assert int(short.observed.split("(")[1].split(")")[0]) > train_images / 3
    report = (tmp_path / "report.html").read_text()
    assert "blue|red" in report and "<title>green train:" in report


def test_a_multi_label_row_with_a_bad_label_fails(tmp_path):
    listing = write_multi_label_set(tmp_path / "data", images=21)
    (tmp_path / "data" / "images" / "odd.png").write_bytes(squares_image(("red",), seed=99))
    with listing.open("a") as extra:
        extra.write('{"uri": "images/odd.png", "labels": ["red", "a/b"]}\n')
    with pytest.raises(DataValidationError, match=r"bad labels: 'a/b'"):
        _validate(tmp_path, _ingested(tmp_path, listing))


def test_every_supported_format_decodes_with_its_brightness(tmp_path):
    for image_format in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        path = tmp_path / f"image.{image_format.lower()}"
        path.write_bytes(colour_image((10, 120, 200), seed=3, image_format=image_format))
        error, brightness = inspect_image(str(path))
        assert error == "" and 0 < brightness < 1, image_format
    white = tmp_path / "white.png"
    white.write_bytes(encode_image(np.full((20, 20, 3), 255, np.uint8)))
    assert inspect_image(str(white)) == ("", 1.0)


def test_a_corpus_of_real_world_junk_is_sorted_out(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=14)
    add_corpus(tree / "red")

    result = _validate(tmp_path, _ingested(tmp_path, tree), max_invalid_fraction=0.2)

    quarantined = manifest.read(tmp_path / "validated", artifacts.QUARANTINE)
    reasons = dict(
        zip(quarantined["uri"].str.split("/").str[-1], quarantined["reason"], strict=True)
    )
    assert set(reasons) == set(QUARANTINED)
    assert result.quarantined == len(QUARANTINED)
    assert reasons["bomb.png"].endswith("over max_pixels=50,000,000; refused before decoding")
    assert reasons["bomb.png"].startswith("40000x40000 is 1,600,000,000 pixels")
    assert reasons["one-pixel.png"] == "1x1 is smaller than min_side=16"
    assert reasons["empty.jpg"] == "empty file"
    for name in ("truncated.jpg", "notes.jpg", "page.png", "noise.jpg", "header-only.jpg"):
        assert reasons[name].startswith("does not decode as an image: "), name
    kept_names = set(manifest.read(tmp_path / "validated")["uri"].str.split("/").str[-1])
    assert set(ACCEPTED) <= kept_names
    assert not kept_names & set(SKIPPED)


def _tree_with_mix(root, counts):
    for (label, colour), count in zip(CLASS_COLOURS.items(), counts, strict=True):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / label / f"{label}-{i}.png").write_bytes(colour_image(colour, seed=i))
    return root


def test_drift_from_the_served_models_data(tmp_path, trained_model):
    served = tmp_path / "first"
    served.mkdir()
    _validate(served, _ingested(served, _tree_with_mix(served / "data", (12, 12, 12))))
    push(
        trained_model,
        ServingTarget(str(tmp_path / "serving"), "colours"),
        str(served / "validated"),
    )
    limits = {"serving_root": str(tmp_path / "serving"), "model_name": "colours"}

    same = tmp_path / "same"
    same.mkdir()
    result = _validate(same, _ingested(same, served / "data"), **limits)
    assert result.drift == {"label_tvd": 0.0, "size_shift": 0.0, "brightness_shift": 0.0}
    assert result.drift_baseline_version == 1

    reweighted = tmp_path / "reweighted"
    reweighted.mkdir()
    manifest_dir = _ingested(reweighted, _tree_with_mix(reweighted / "data", (30, 4, 4)))
    result = _validate(reweighted, manifest_dir, min_images_per_class=2, **limits)
    assert result.drift["label_tvd"] == pytest.approx(0.5 * (2 * (30 / 38 - 1 / 3)), abs=1e-6)
    label_rules = {r.severity: r for r in result.rules if "label distribution" in r.rule}
    assert label_rules["error"].passed and not label_rules["warning"].passed
    assert "Drift against served version 1" in (reweighted / "report.html").read_text()

    with pytest.raises(DataValidationError, match="raise max_label_drift"):
        _validate(reweighted, manifest_dir, min_images_per_class=2, max_label_drift=0.3, **limits)


def test_split_shares_far_from_the_fractions_are_a_warning(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=10, splits=("train", "test"))
    result = _validate(
        tmp_path, _ingested(tmp_path, tree, train_fraction=0.5, validation_fraction=0.0)
    )
    shares = next(r for r in result.rules if r.rule.startswith("split shares"))
    assert shares.passed and shares.observed == "train 0.50, validation 0.00, test 0.50"
    result = _validate(
        tmp_path, _ingested(tmp_path, tree, train_fraction=0.8, validation_fraction=0.1)
    )
    shares = next(r for r in result.rules if r.rule.startswith("split shares"))
    assert not shares.passed and shares.severity == "warning"


def test_the_report_says_when_validation_was_carved_from_train(tmp_path):
    tree = write_colour_tree(tmp_path / "data", per_class=9, splits=("train", "test"))
    result = _validate(tmp_path, _ingested(tmp_path, tree, 0.8, 0.1))
    assert result.validation_carved_from_train == 3
    assert result.images["validation"] == 3
    report = (tmp_path / "report.html").read_text()
    assert "The data had no validation split: 3 train images were moved" in report


def test_drift_reads_the_profile_of_a_model_served_from_a_bucket(tmp_path, trained_model, bucket):
    _validate(tmp_path, _ingested(tmp_path, _tree_with_mix(tmp_path / "data", (8, 8, 8))))
    serving_root = f"{bucket.root}/serving"
    push(trained_model, ServingTarget(serving_root, "colours"), str(tmp_path / "validated"))
    result = _validate(
        tmp_path,
        str(tmp_path / "manifest"),
        serving_root=serving_root,
        model_name="colours",
    )
    assert result.drift_baseline_version == 1
    assert result.drift["label_tvd"] == 0.0


def test_nothing_usable_fails_with_the_quarantine_rule(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / label / f"{i}.png").write_text("junk")
    with pytest.raises(DataValidationError, match="found 6 of 6 files quarantined"):
        _validate(tmp_path, _ingested(tmp_path, tmp_path / "data"))
