import collections
import io

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from conftest import IMAGE_SIZE
from imgclf.components import manifest
from imgclf.components.artifacts import TFRECORD_SUFFIX
from imgclf.components.parameters import PreprocessSettings
from imgclf.components.transform.features import LABEL_ID_KEY, read_counts
from imgclf.components.transform.preprocess import preprocess
from imgclf.components.transform.rebalance import augmented_copy, copy_plan


def _train_rows(counts: dict[str, int]) -> pd.DataFrame:
    rows = [
        {"uri": f"/data/{label}/{i}.png", "label": label, "sha256": f"{label}{i}"}
        for label, count in counts.items()
        for i in range(count)
    ]
    return pd.DataFrame(rows)


def test_copies_fill_each_smaller_class_up_to_the_target():
    plan = copy_plan(_train_rows({"cat": 5, "dog": 2, "owl": 7}), target=5)
    assert [(uri, label) for uri, label, _ in plan] == [
        ("/data/dog/0.png", "dog"),
        ("/data/dog/1.png", "dog"),
        ("/data/dog/0.png", "dog"),
    ]
    seeds = [seed for _, _, seed in plan]
    assert len(set(seeds)) == 3  # two copies of one image differ
    assert copy_plan(_train_rows({"cat": 5, "dog": 2, "owl": 7}), target=5) == plan


def test_a_copy_is_a_deterministic_augmented_png_of_the_original():
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # a red band on the left: flips and shifts move it
    original = Image.fromarray(pixels)
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG")
    first, again = augmented_copy(buffer.getvalue(), 7), augmented_copy(buffer.getvalue(), 7)
    assert first == again
    copies = [
        np.asarray(Image.open(io.BytesIO(augmented_copy(buffer.getvalue(), s)))) for s in (7, 8)
    ]
    assert Image.open(io.BytesIO(first)).format == "PNG"
    assert copies[0].shape == (40, 60, 3)
    assert not np.array_equal(copies[0], copies[1])


def test_preprocess_writes_the_copies_into_train_only(prepared, tmp_path):
    frame = manifest.read(prepared["validated"])
    # Keep two of one class's train images, so that it needs copies.
    blue_train = frame.index[(frame["split"] == "train") & (frame["label"] == "blue")]
    smaller = frame.drop(blue_train[2:])
    manifest.write(smaller, tmp_path / "manifest")
    target = int(manifest.split_rows(smaller, "train")["label"].value_counts().max()) + 1
    examples = tmp_path / "examples"
    counts = preprocess(
        str(tmp_path / "manifest"),
        str(examples),
        str(tmp_path / "transform"),
        PreprocessSettings(image_size=IMAGE_SIZE, rebalance_to=target),
    )
    label_ids = collections.Counter(
        tf.train.Example.FromString(record.numpy())
        .features.feature[LABEL_ID_KEY]
        .int64_list.value[0]
        for path in examples.glob(f"train/*{TFRECORD_SUFFIX}")
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP")
    )
    assert sorted(label_ids.values()) == [target] * 3
    assert counts["train"] == read_counts(str(examples))["train"] == 3 * target
    assert counts["test"] == len(manifest.split_rows(smaller, "test"))


def test_rebalancing_multi_label_data_is_refused(multi_label_prepared, tmp_path):
    with pytest.raises(ValueError, match="rebalance_to works on single-label data"):
        preprocess(
            multi_label_prepared["validated"],
            str(tmp_path / "examples"),
            str(tmp_path / "transform"),
            PreprocessSettings(image_size=IMAGE_SIZE, rebalance_to=50),
        )
