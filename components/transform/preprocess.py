"""Preprocess: tensorflow-transform on Apache Beam, from manifest rows to TFRecords.

The transform itself (``features.make_preprocessing_fn``) is written next to the TFRecords and
embedded in the serving SavedModel, so training, evaluation and serving run the very same decode
and resize: no skew.

Data flows as Arrow RecordBatches of a bounded number of images (TFXIO in, record batches
out), never as per-image Python dicts, and never the whole dataset at once.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder
from tfx_bsl.public import tfxio

from imgclf.components import artifacts, manifest, storage
from imgclf.components.parameters import PreprocessSettings
from imgclf.components.transform import rebalance
from imgclf.components.transform.features import (
    IMAGE_BYTES_KEY,
    LABEL_KEY,
    LABELS_KEY,
    MULTI_LABEL_RAW_FEATURE_SPEC,
    RAW_FEATURE_SPEC,
    Preprocessing,
    make_preprocessing_fn,
    write_counts,
)

log = logging.getLogger(__name__)

# Images per Arrow RecordBatch: encoded photos are large, so a batch bounds the memory a
# worker holds, whatever the dataset's size.
_IMAGES_PER_RECORD_BATCH = 64


def preprocess(
    manifest_dir: str,
    examples_dir: str,
    transform_dir: str,
    settings: PreprocessSettings | None = None,
) -> dict[str, int]:
    """Writes gzip TFRecords to ``examples_dir/<split>/`` and the transform graph, with the
    image size and resize policy it applies, to ``transform_dir``; returns the number of records
    per split.

    The vocabulary and any other analysis see only the train split. With ``rebalance_to``,
    every class with fewer train images gets augmented copies up to that many.
    """
    settings = settings or PreprocessSettings()
    remote = runs_remotely(settings.beam_pipeline_args)
    if remote:
        _check_reachable_by_workers(examples_dir, transform_dir)
    preprocessing = Preprocessing(
        settings.image_size, settings.resize_policy, settings.jpeg_decoding
    )
    frame = manifest.read(manifest_dir)
    counts = manifest.counts_by_split(frame)
    if counts["train"] == 0:
        raise ValueError("The manifest has no train images; nothing to preprocess.")
    multi_label = manifest.is_multi_label(frame)
    copies = _copy_plan(frame, settings.rebalance_to)
    counts["train"] += len(copies)
    options = PipelineOptions(settings.beam_pipeline_args)
    raw_tfxio = tfxio.TFExampleBeamRecord(
        physical_format="inmem",
        telemetry_descriptors=["imgclf", "preprocess"],
        schema=schema_utils.schema_from_feature_spec(
            MULTI_LABEL_RAW_FEATURE_SPEC if multi_label else RAW_FEATURE_SPEC
        ),
    )
    raw_data_config = raw_tfxio.TensorAdapterConfig()
    log.info(
        "Preprocessing %s %s images per split at %dx%d (%s, %s JPEG decoding)",
        counts,
        "multi-label" if multi_label else "multi-class",
        preprocessing.image_size,
        preprocessing.image_size,
        preprocessing.resize_policy,
        preprocessing.jpeg_decoding,
    )
    with (
        tempfile.TemporaryDirectory() as temp_dir,
        beam.Pipeline(runner=beam_runner(options), options=options) as pipeline,
        tft_beam.Context(temp_dir=_beam_temp_dir(options, temp_dir, remote)),
    ):
        # Analysis learns the label vocabulary and needs no pixels: it reads the manifest's
        # labels, so the transform below can stream the images in one pass. (Analysing and
        # transforming the same images would hold them all until analysis finished.) An
        # analyzer over pixels would need this changed: it would learn from stand-in images.
        transform_fn = (
            _train_labels(pipeline, frame, raw_tfxio),
            raw_data_config,
        ) | "AnalyzeTrainLabels" >> tft_beam.AnalyzeDataset(
            make_preprocessing_fn(preprocessing, multi_label)
        )
        for split in (split for split in manifest.SPLITS if counts[split]):
            transformed, _ = (
                (
                    _read_split(
                        pipeline, frame, split, raw_tfxio, copies if split == "train" else []
                    ),
                    raw_data_config,
                ),
                transform_fn,
            ) | f"Transform{split.title()}" >> tft_beam.TransformDataset(output_record_batches=True)
            _ = (
                transformed
                | f"Encode{split.title()}"
                >> beam.FlatMapTuple(lambda batch, _: RecordBatchToExamplesEncoder().encode(batch))
                # No fixed shard count: that would group every record of the split in one
                # place first. Each bundle writes its own file, so the number of files follows
                # the runner's parallelism and, on Dataflow, the data's size.
                | f"Write{split.title()}"
                >> beam.io.WriteToTFRecord(
                    storage.join(examples_dir, split, "part"),
                    file_name_suffix=artifacts.TFRECORD_SUFFIX,
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP,
                )
            )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_dir)
    write_counts(examples_dir, counts)
    preprocessing.write(transform_dir)
    log.info("Wrote TFRecords to %s and the transform graph to %s", examples_dir, transform_dir)
    return counts


def _copy_plan(frame, rebalance_to: int) -> list[tuple[str, str, int]]:
    if rebalance_to <= 0:
        return []
    if manifest.is_multi_label(frame):
        raise ValueError(
            "rebalance_to works on single-label data: copying an image of several labels "
            "to raise one label's count raises the others' too. Set rebalance_to=0."
        )
    copies = rebalance.copy_plan(manifest.split_rows(frame, "train"), rebalance_to)
    log.info("Rebalancing: %d augmented copies bring every class to %d", len(copies), rebalance_to)
    return copies


def _read_split(
    pipeline: beam.Pipeline,
    frame,
    split: str,
    raw_tfxio: tfxio.TFExampleBeamRecord,
    copies: list[tuple[str, str, int]],
) -> beam.PCollection:
    """The split's images and labels, and any augmented ``copies`` ``(uri, label, seed)``, as
    Arrow RecordBatches; only the URIs are listed up front, each worker reads the files it is
    given."""
    rows = manifest.split_rows(frame, split)
    multi_label = manifest.is_multi_label(frame)
    originals = [(uri, label, None) for uri, label in zip(rows["uri"], _labels(rows), strict=True)]
    return (
        pipeline
        | f"List{split.title()}" >> beam.Create(originals + copies)
        # Spread the reads across workers instead of keeping them on the one that listed them.
        | f"Spread{split.title()}" >> beam.Reshuffle()
        | f"Read{split.title()}"
        >> beam.MapTuple(
            lambda uri, labels, copy_seed: _raw_example(
                _image_bytes(uri, copy_seed), labels, multi_label
            )
        )
        | f"Batch{split.title()}" >> raw_tfxio.BeamSource(batch_size=_IMAGES_PER_RECORD_BATCH)
    )


def _image_bytes(uri: str, copy_seed: int | None) -> bytes:
    data = storage.read_bytes(uri)
    return data if copy_seed is None else rebalance.augmented_copy(data, copy_seed)


def _train_labels(
    pipeline: beam.Pipeline, frame, raw_tfxio: tfxio.TFExampleBeamRecord
) -> beam.PCollection:
    """The train split's labels as RecordBatches, each with a 1x1 black PNG for its image
    (the graph decodes every row it analyses, but only the labels feed an analyzer)."""
    rows = manifest.split_rows(frame, "train")
    multi_label = manifest.is_multi_label(frame)
    stand_in = tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)).numpy()
    return (
        pipeline
        | "ListTrainLabels"
        >> beam.Create([_raw_example(stand_in, label, multi_label) for label in _labels(rows)])
        | "BatchTrainLabels" >> raw_tfxio.BeamSource()
    )


def _labels(rows) -> list[str] | list[list[str]]:
    """Each row's label, or its list of labels for multi-label data."""
    return manifest.label_sets(rows) if manifest.is_multi_label(rows) else rows["label"].tolist()


def _raw_example(image_bytes: bytes, labels: str | list[str], multi_label: bool) -> bytes:
    """A serialized ``tf.Example`` of an image's bytes and its label(s): TFXIO's input."""
    label_values = labels if multi_label else [labels]
    feature = {
        IMAGE_BYTES_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        LABELS_KEY if multi_label else LABEL_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[label.encode() for label in label_values])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# What Beam's create_runner takes for its DirectRunner: the name, case-insensitive, with or
# without "Runner" (apache_beam/runners/runner.py, create_runner), or the class's path.
_DIRECT_RUNNER_NAMES = {
    "",
    "direct",
    "directrunner",
    "apache_beam.runners.direct.direct_runner.directrunner",
}
# Runners whose workers share this process's disk; any other (Dataflow, Flink, Spark) runs
# elsewhere and must read and write through URIs.
_LOCAL_RUNNERS = _DIRECT_RUNNER_NAMES | {
    "bundlebaseddirectrunner",
    "switchingdirectrunner",
    "fnapirunner",
}


def runs_remotely(beam_pipeline_args: list[str]) -> bool:
    """Whether Beam's workers run outside this process (and cannot see its disk)."""
    runner = PipelineOptions(beam_pipeline_args).view_as(StandardOptions).runner or ""
    return runner.lower() not in _LOCAL_RUNNERS


def beam_runner(options: PipelineOptions) -> PipelineRunner | None:
    """The runner to give ``beam.Pipeline``: None, so that Beam makes the one the options name,
    unless they name Beam's DirectRunner or none; then an ``FnApiRunner`` that downloads nothing.

    Beam 2.77's DirectRunner is ``SwitchingDirectRunner``, which first tries ``PrismRunner``
    (apache_beam/runners/direct/direct_runner.py, run_pipeline: "Running pipeline with
    PrismRunner"), and Prism fetches its binary from GitHub with an ``urlopen`` that has no
    timeout (apache_beam/runners/portability/prism_runner.py, _download_to_local_path). Offline,
    that fails at once and Beam falls back to the FnApiRunner, built with the pipeline's options
    as provision info (so that ``--direct_running_mode=multi_processing`` workers get them);
    behind a firewall that drops packets it hangs. This is that FnApiRunner, built the same
    way, without the attempt. The FnApiRunner class itself, not a subclass: tensorflow-transform
    picks its TensorFlow session settings by ``type(pipeline.runner)`` (tensorflow_transform/
    beam/impl.py, _DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE), and gives FnApiRunner the
    DirectRunner's. ``--runner=SwitchingDirectRunner`` or ``--runner=PrismRunner`` still gets
    Beam's own.
    """
    named = options.view_as(StandardOptions).runner
    if not (named is None or isinstance(named, str) and named.lower() in _DIRECT_RUNNER_NAMES):
        log.info("Beam runner: %s, as beam_pipeline_args name it", named)
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    direct = options.view_as(DirectOptions)
    log.info(
        "Beam runner: FnApiRunner (%s, %s worker(s)) for %s: what Beam's DirectRunner falls "
        "back to, without first trying PrismRunner, which downloads its binary "
        "(--runner=SwitchingDirectRunner gives Beam's own choice)",
        direct.direct_running_mode,
        direct.direct_num_workers,
        f"--runner={named}" if named else "no --runner (Beam's default, DirectRunner)",
    )
    encoded_options = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded_options)
        )
    )


def remote_runner_args(
    beam_pipeline_args: list[str], task_root_uri: str, step_image: str
) -> list[str]:
    """Beam options for workers elsewhere, the user's first and untouched: ``step_image`` as
    the workers' environment (so they have this package and its pinned TensorFlow), and a
    temp location beside the step's outputs when none is given.

    Where the image goes depends on the runner (Beam 2.77): Dataflow's workers run
    ``--sdk_container_image`` (WorkerOptions; apache_beam/runners/dataflow/internal/
    apiclient.py, get_container_image_from_options), while a portable runner (Flink, Spark,
    PortableRunner) builds its workers' environment from ``--environment_type`` and
    ``--environment_config`` alone (apache_beam/transforms/environments.py, Environment and
    DockerEnvironment.from_options; DOCKER when no type is given). An EXTERNAL environment's
    workers are a worker pool the cluster runs (its image is that pool's), so it is left as
    it is."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    options = PipelineOptions(beam_pipeline_args)
    added = _worker_image_args(options, step_image) if step_image else []
    if not options.view_as(GoogleCloudOptions).temp_location:
        added.append(f"--temp_location={storage.join(task_root_uri, 'beam-temp')}")
    return [*beam_pipeline_args, *added]


def _worker_image_args(options: PipelineOptions, step_image: str) -> list[str]:
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions, WorkerOptions

    if (options.view_as(StandardOptions).runner or "").lower().startswith("dataflow"):
        given = options.view_as(WorkerOptions).sdk_container_image
        return [] if given else [f"--sdk_container_image={step_image}"]
    portable = options.view_as(PortableOptions)
    if (portable.environment_type or "DOCKER").upper() != "DOCKER":
        return []
    if portable.environment_config or portable.lookup_environment_option("docker_container_image"):
        return []
    chosen = [] if portable.environment_type else ["--environment_type=DOCKER"]
    return [*chosen, f"--environment_config={step_image}"]


def _check_reachable_by_workers(*output_dirs: str) -> None:
    """Remote workers write through TensorFlow's and Beam's file systems, which reach GCS but
    not S3 (TensorFlow 2.21: "File system scheme 's3' not implemented")."""
    unreachable = [uri for uri in output_dirs if storage.scheme(uri) != "gs"]
    if unreachable:
        raise ValueError(
            f"A remote Beam runner cannot write {', '.join(unreachable)}: its workers reach gs:// "
            "only. Run with a gs:// pipeline root, or preprocess on the DirectRunner "
            '(beam_pipeline_args=["--runner=DirectRunner"]).'
        )


def _beam_temp_dir(options: PipelineOptions, local_temp_dir: str, remote: bool) -> str:
    """The runner's temp location for remote workers, which cannot see this disk; this disk
    for local ones, whatever temp_location says (TensorFlow writes no s3:// temp files)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    temp_location = options.view_as(GoogleCloudOptions).temp_location
    return temp_location if remote and temp_location else str(Path(local_temp_dir))
