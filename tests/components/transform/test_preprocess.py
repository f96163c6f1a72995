import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from conftest import CLASS_COLOURS, IMAGE_SIZE, LABEL_CORNERS, encode_image
from imgclf.components import manifest, storage
from imgclf.components.artifacts import TFRECORD_SUFFIX
from imgclf.components.parameters import PreprocessSettings
from imgclf.components.transform import preprocess as preprocess_step
from imgclf.components.transform.features import (
    IMAGE_KEY,
    LABEL_ID_KEY,
    LABEL_IDS_KEY,
    LABEL_VOCABULARY,
    decode_and_resize,
    parse_images,
    split_file_pattern,
)
from imgclf.components.transform.preprocess import preprocess


def _records(examples_dir, split, transform_dir):
    spec = tft.TFTransformOutput(transform_dir).transformed_feature_spec()
    files = tf.io.gfile.glob(split_file_pattern(examples_dir, split))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1000)
    return [tf.io.parse_example(batch, spec) for batch in dataset][0]


def test_every_split_becomes_gzip_tfrecords_of_resized_images(prepared):
    frame = manifest.read(prepared["validated"])
    for split, count in manifest.counts_by_split(frame).items():
        records = _records(prepared["examples"], split, prepared["transform"])
        images = parse_images(records[IMAGE_KEY], IMAGE_SIZE)
        assert images.shape == (count, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert images.dtype == tf.uint8
        assert set(records[LABEL_ID_KEY].numpy()) <= {0, 1, 2}


def test_label_vocabulary_is_learned_from_train(prepared):
    output = tft.TFTransformOutput(prepared["transform"])
    vocabulary = [v.decode() for v in output.vocabulary_by_name(LABEL_VOCABULARY)]
    assert sorted(vocabulary) == sorted(CLASS_COLOURS)


def test_multi_label_records_hold_each_images_label_ids(multi_label_prepared):
    paths = multi_label_prepared
    output = tft.TFTransformOutput(paths["transform"])
    vocabulary = [v.decode() for v in output.vocabulary_by_name(LABEL_VOCABULARY)]
    assert sorted(vocabulary) == sorted(LABEL_CORNERS)
    frame = manifest.split_rows(manifest.read(paths["validated"]), "test")
    records = _records(paths["examples"], "test", paths["transform"])
    assert LABEL_ID_KEY not in records
    label_ids = tf.sparse.to_dense(records[LABEL_IDS_KEY], default_value=-1).numpy()
    stored = sorted(tuple(sorted(vocabulary[i] for i in row if i >= 0)) for row in label_ids)
    assert stored == sorted(tuple(labels) for labels in manifest.label_sets(frame))


def test_stored_images_are_the_decoded_files(prepared):
    """The TFRecords hold exactly what decode_and_resize makes of each file."""
    frame = manifest.split_rows(manifest.read(prepared["validated"]), "test")
    records = _records(prepared["examples"], "test", prepared["transform"])
    stored = parse_images(records[IMAGE_KEY], IMAGE_SIZE).numpy()
    expected = np.stack(
        [decode_and_resize(storage.read_bytes(uri), IMAGE_SIZE).numpy() for uri in frame["uri"]]
    )
    # TFRecord order is not the manifest's: compare as sets of images.
    key = lambda images: sorted(image.tobytes() for image in images)  # noqa: E731
    assert key(stored) == key(expected)


def test_grayscale_and_rgba_become_rgb():
    gray = encode_image(np.full((20, 20), 128, np.uint8))
    rgba = encode_image(
        np.dstack([np.full((20, 20, 3), 60, np.uint8), np.full((20, 20), 255, np.uint8)])
    )
    for data in (gray, rgba):
        assert decode_and_resize(data, 16).shape == (16, 16, 3)
    assert decode_and_resize(gray, 16).numpy()[8, 8].tolist() == [128, 128, 128]


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    pixel = decode_and_resize(buffer.getvalue(), 16).numpy()[8, 8]
    assert pixel[0] > 200 and pixel[2] < 50


def test_aspect_ratio_is_kept_by_padding():
    wide = encode_image(np.full((10, 40, 3), 255, np.uint8))
    image = decode_and_resize(wide, 32, resize_policy="pad").numpy()
    assert image.shape == (32, 32, 3)
    assert image[0].max() == 0 and image[-1].max() == 0  # black bars top and bottom
    assert image[16].min() == 255  # the picture itself, unstretched, in the middle


def test_the_crop_policy_keeps_the_centre_square():
    # A wide image: red left quarter, white middle half, blue right quarter.
    pixels = np.full((10, 40, 3), 255, np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    image = decode_and_resize(encode_image(pixels), 32, resize_policy="crop").numpy()
    assert image.shape == (32, 32, 3)
    assert image.min() >= 250  # only the white middle: no bars, no coloured edges


def test_the_stretch_policy_keeps_everything_at_full_size():
    pixels = np.full((10, 40, 3), 255, np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    image = decode_and_resize(encode_image(pixels), 32, resize_policy="stretch").numpy()
    assert image.shape == (32, 32, 3)
    assert (image[:, :6] == (255, 0, 0)).all() and (image[:, -6:] == (0, 0, 255)).all()
    assert (image[:, 10:22] == 255).all()  # no bars: the white middle fills every row


def test_an_unknown_resize_policy_is_refused(prepared, tmp_path):
    with pytest.raises(ValueError, match="resize_policy must be one of pad, crop, stretch, not"):
        preprocess(
            prepared["validated"],
            str(tmp_path / "e"),
            str(tmp_path / "t"),
            PreprocessSettings(image_size=32, resize_policy="fit"),
        )


def _examples(examples_dir):
    """Every example as ``(split, label id, image bytes)``, sorted: the content, without the
    runner's record order or the protobuf map order of the serialization."""
    examples = []
    for path in sorted(tf.io.gfile.glob(f"{examples_dir}/*/*{TFRECORD_SUFFIX}")):
        split = path.split("/")[-2]
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            features = tf.train.Example.FromString(record.numpy()).features.feature
            examples.append(
                (
                    split,
                    features[LABEL_ID_KEY].int64_list.value[0],
                    features[IMAGE_KEY].bytes_list.value[0],
                )
            )
    return sorted(examples)


def test_two_worker_processes_write_the_same_records(prepared, tmp_path):
    """DirectRunner in multi-processing mode, as a Beam runner with workers would run it,
    writes exactly the examples the in-memory run wrote (the order is the runner's)."""
    preprocess(
        prepared["validated"],
        str(tmp_path / "examples"),
        str(tmp_path / "transform"),
        PreprocessSettings(
            image_size=IMAGE_SIZE,
            beam_pipeline_args=[
                "--runner=DirectRunner",
                "--direct_running_mode=multi_processing",
                "--direct_num_workers=2",
            ],
        ),
    )
    written = _examples(tmp_path / "examples")
    assert len(written) == len(manifest.read(prepared["validated"]))
    assert written == _examples(prepared["examples"])


@pytest.mark.parametrize(
    "args, remote",
    [
        ([], False),
        (["--runner=DirectRunner"], False),
        (["--runner", "DirectRunner", "--direct_num_workers=2"], False),
        (["--runner=DataflowRunner", "--project=p", "--region=r"], True),
        (["--runner=FlinkRunner"], True),
    ],
)
def test_a_runner_whose_workers_cannot_see_this_disk_is_remote(args, remote):
    assert preprocess_step.runs_remotely(args) is remote


def test_remote_workers_run_the_step_image_and_keep_temp_files_beside_the_outputs():
    """Dataflow's workers run ``--sdk_container_image`` (Beam's WorkerOptions) and need a
    ``--temp_location`` they can reach (Beam's GoogleCloudOptions); the user's own win."""
    root, image = "gs://runs/imgclf/run-1/preprocess/salt", "registry.example/imgclf:9"
    args = preprocess_step.remote_runner_args(["--runner=DataflowRunner"], root, image)
    assert args == [
        "--runner=DataflowRunner",
        "--sdk_container_image=registry.example/imgclf:9",
        f"--temp_location={root}/beam-temp",
    ]
    own = ["--runner=DataflowRunner", "--sdk_container_image=mine:1", "--temp_location=gs://t/x"]
    assert preprocess_step.remote_runner_args(own, root, image) == own


def test_a_remote_runner_is_refused_outputs_its_workers_cannot_write(tmp_path):
    settings = PreprocessSettings(beam_pipeline_args=["--runner=DataflowRunner"])
    root = "minio://mlpipeline/v2/artifacts/imgclf/run/preprocess/salt"
    with pytest.raises(ValueError, match="workers reach gs:// only"):
        preprocess(str(tmp_path / "absent"), f"{root}/examples", f"{root}/transform", settings)


def test_the_direct_runner_keeps_its_temp_files_on_this_disk_whatever_temp_location_says(
    prepared, tmp_path
):
    """A pipeline's Beam options may carry a remote temp_location (kept for a later switch to
    Dataflow); TensorFlow cannot write s3:// temp files, and local workers need none there."""
    settings = PreprocessSettings(
        image_size=IMAGE_SIZE,
        beam_pipeline_args=["--runner=DirectRunner", "--temp_location=s3://nowhere/tmp"],
    )
    preprocess(prepared["validated"], str(tmp_path / "ex"), str(tmp_path / "tf"), settings)
    assert _examples(tmp_path / "ex") == _examples(prepared["examples"])
