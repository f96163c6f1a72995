import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from beam_options import DATAFLOW_AUTOSCALING, FLINK_DOCKER, FLINK_WORKER_POOL
from PIL import Image

from conftest import CLASS_COLOURS, IMAGE_SIZE, LABEL_CORNERS, REPO, encode_image
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


def _s3_options() -> list[str]:
    """Beam's S3Options for moto's server, from the environment the s3_bucket fixture sets."""
    return [
        f"--s3_endpoint_url={os.environ['AWS_ENDPOINT_URL']}",
        f"--s3_access_key_id={os.environ['AWS_ACCESS_KEY_ID']}",
        f"--s3_secret_access_key={os.environ['AWS_SECRET_ACCESS_KEY']}",
        f"--s3_region_name={os.environ['AWS_DEFAULT_REGION']}",
    ]


@pytest.mark.parametrize("destination", ["local", "s3"])
def test_two_worker_processes_write_the_same_records(prepared, tmp_path, request, destination):
    """DirectRunner in multi-processing mode, as a Beam runner with workers would run it,
    writes exactly the examples the in-memory run wrote (the order is the runner's): to this
    disk, and through Beam's own S3 file system (apache_beam/io/aws, configured by Beam's
    S3Options) to moto's S3 server. The transform graph is a SavedModel, which TensorFlow's
    file system writes, and it has no S3: it stays on this disk."""
    if destination == "s3":
        examples_uri = f"{request.getfixturevalue('s3_bucket').root}/examples"
        store_options = _s3_options()
    else:
        examples_uri, store_options = str(tmp_path / "examples"), []
    preprocess(
        prepared["validated"],
        examples_uri,
        str(tmp_path / "transform"),
        PreprocessSettings(
            image_size=IMAGE_SIZE,
            beam_pipeline_args=[
                "--runner=DirectRunner",
                "--direct_running_mode=multi_processing",
                "--direct_num_workers=2",
                *store_options,
            ],
        ),
    )
    written = _examples(storage.download_folder(examples_uri, tmp_path / "written"))
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


def _image_beam_gives_workers(options) -> str | None:
    """The worker image as Beam itself derives it from the options, per runner."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.dataflow.internal import apiclient
    from apache_beam.transforms.environments import Environment

    if options.view_as(StandardOptions).runner.startswith("Dataflow"):
        return apiclient.get_container_image_from_options(options)
    environment = Environment.from_options(options)
    return getattr(environment, "container_image", None) or getattr(environment, "url", None)


@pytest.mark.parametrize(
    "user_args, workers_run",
    [
        (DATAFLOW_AUTOSCALING, "registry.example/imgclf:9"),
        (FLINK_DOCKER, "registry.example/imgclf:9"),
        (FLINK_WORKER_POOL, "localhost:50000"),
    ],
    ids=["dataflow-autoscaling", "flink-docker", "flink-worker-pool"],
)
def test_remote_runner_options_reach_beam_unchanged_with_the_workers_image(user_args, workers_run):
    """Parsed by Beam's own PipelineOptions, every option the user passed has its value, and
    the workers run the step image: Dataflow's through --sdk_container_image, a portable
    runner's through its DOCKER environment; an EXTERNAL worker pool (Flink's Beam sidecar)
    keeps its address, its image being the pool's."""
    from apache_beam.options.pipeline_options import PipelineOptions

    root = "gs://runs/imgclf/run-1/preprocess/salt"
    args = preprocess_step.remote_runner_args(user_args, root, "registry.example/imgclf:9")
    assert args[: len(user_args)] == user_args
    given = PipelineOptions(user_args).get_all_options(drop_default=True)
    passed = PipelineOptions(args).get_all_options(drop_default=True)
    assert {name: passed[name] for name in given} == given
    assert passed["temp_location"] == f"{root}/beam-temp"
    assert _image_beam_gives_workers(PipelineOptions(args)) == workers_run


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


# The local runner. Beam 2.77's DirectRunner is SwitchingDirectRunner
# (apache_beam/runners/direct/direct_runner.py: `DirectRunner = SwitchingDirectRunner`), whose
# run_pipeline tries PrismRunner first when _PrismRunnerSupportVisitor accepts the pipeline
# ("Running pipeline with PrismRunner."), and Prism's PrismJobServer._download_to_local_path
# (apache_beam/runners/portability/prism_runner.py) fetches its binary from GitHub with an
# urlopen without a timeout. On failure it falls back to an FnApiRunner given the options as
# provision_info ("Falling back to DirectRunner", then `fn_runner.FnApiRunner(provision_info=…)`).


def _fnapi_runner_type():
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return fn_runner.FnApiRunner


def _provisioned_options(runner) -> dict:
    from apache_beam.runners.job import utils

    return utils.struct_to_dict(runner._provision_info.provision_info.pipeline_options)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--runner=DirectRunner"],
        ["--runner=direct"],
        [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ],
    ],
)
def test_beams_direct_runner_becomes_the_fnapi_runner_it_falls_back_to(args):
    """What SwitchingDirectRunner.run_pipeline builds once Prism has failed
    (apache_beam/runners/direct/direct_runner.py, after "Falling back to DirectRunner"): an
    FnApiRunner whose provision info holds the pipeline options, which
    local_job_service.SubprocessSdkWorker hands multi-processing workers as PIPELINE_OPTIONS.
    The class itself, so that tensorflow-transform gives it the DirectRunner's TensorFlow
    settings (tensorflow_transform/beam/impl.py, _DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE,
    keyed by `type(pipeline.runner)`)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.beam import impl

    options = PipelineOptions(args)
    runner = preprocess_step.beam_runner(options)
    assert type(runner) is _fnapi_runner_type()
    configs = impl._DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE
    assert configs[type(runner)] is configs[beam.runners.DirectRunner]
    provisioned = _provisioned_options(runner)
    for name, value in options.get_all_options().items():
        if value is not None and not isinstance(value, (list, dict)):
            assert str(provisioned[f"beam:option:{name}:v1"]) == str(value), name


@pytest.mark.parametrize(
    "runner",
    [
        "DataflowRunner",
        "PortableRunner",
        "FlinkRunner",
        "SparkRunner",
        "PrismRunner",
        "SwitchingDirectRunner",
        "BundleBasedDirectRunner",
        "FnApiRunner",
    ],
)
def test_any_other_runner_is_left_to_beam_to_make(runner):
    """None makes beam.Pipeline create the runner the options name (apache_beam/pipeline.py,
    Pipeline.__init__: `runner = self._options.view_as(StandardOptions).runner`, then
    create_runner), exactly as without this step."""
    from apache_beam.options.pipeline_options import PipelineOptions

    assert preprocess_step.beam_runner(PipelineOptions([f"--runner={runner}"])) is None


def _watch_beam(monkeypatch) -> tuple[list, list]:
    """Records calls to Beam's Prism path (refusing them, as an offline download fails) and the
    runner objects whose run_pipeline runs a pipeline."""
    from apache_beam.runners.portability import prism_runner

    prism_calls, runners = [], []

    def refuse(name):
        def call(*args, **kwargs):
            prism_calls.append(name)
            raise RuntimeError(f"{name} called")

        return call

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse("PrismRunner.run"))
    monkeypatch.setattr(
        prism_runner.PrismJobServer,
        "_download_to_local_path",
        staticmethod(refuse("PrismJobServer._download_to_local_path")),
    )
    fnapi = _fnapi_runner_type()
    run_pipeline = fnapi.run_pipeline

    def recording(self, pipeline, options):
        runners.append(self)
        return run_pipeline(self, pipeline, options)

    monkeypatch.setattr(fnapi, "run_pipeline", recording)
    return prism_calls, runners


def test_beams_own_direct_runner_goes_through_prism(monkeypatch):
    """The control for the test below: the watch sits on the path Beam's DirectRunner takes
    (direct_runner.py, SwitchingDirectRunner.run_pipeline: `prism_runner.PrismRunner()` and
    `runner.run_pipeline(pipeline, options)` before any fallback)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    prism_calls, runners = _watch_beam(monkeypatch)
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        _ = pipeline | beam.Create([1, 2]) | beam.Map(lambda x: x + 1)
    assert prism_calls == ["PrismRunner.run"]
    assert len(runners) == 1  # then the fallback


def test_preprocess_on_the_default_runner_never_reaches_prism(prepared, tmp_path, monkeypatch):
    """The step's default beam_pipeline_args (--runner=DirectRunner) run on the FnApiRunner
    object this step gives Beam, with the options as provision info, and Prism's run and
    download (prism_runner.py: PrismRunner, PrismJobServer._download_to_local_path) are never
    called."""
    prism_calls, runners = _watch_beam(monkeypatch)
    preprocess(
        prepared["validated"],
        str(tmp_path / "examples"),
        str(tmp_path / "transform"),
        PreprocessSettings(image_size=IMAGE_SIZE),
    )
    assert prism_calls == []
    assert [type(runner) for runner in runners] == [_fnapi_runner_type()]
    assert _provisioned_options(runners[0])["beam:option:runner:v1"] == "DirectRunner"
    assert _examples(tmp_path / "examples") == _examples(prepared["examples"])


# Runs in a network namespace of its own. It first shows that no route leads out, then records
# every name lookup and connection Python makes (audit events socket.getaddrinfo and
# socket.connect) to anything but loopback, and prints them last.
_WITHOUT_NETWORK = r"""
import errno, ipaddress, json, logging, socket, sys

probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    probe.connect(("192.0.2.1", 9))
    sys.exit("a route leads out of this namespace")
except OSError as error:
    assert error.errno == errno.ENETUNREACH, error
outside = []

def _loopback(host):
    try:
        return host in (None, "localhost") or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

def _audit(event, args):
    if event == "socket.getaddrinfo" and not _loopback(args[0]):
        outside.append([event, str(args[0])])
    elif event == "socket.connect" and isinstance(args[1], tuple) and not _loopback(args[1][0]):
        outside.append([event, str(args[1][0])])

sys.addaudithook(_audit)
logging.basicConfig(level=logging.INFO)
kind, *argv = sys.argv[1:]
if kind == "preprocess":
    from imgclf.components.parameters import PreprocessSettings
    from imgclf.components.transform.preprocess import preprocess
    image_size, validated, examples, transform, *beam_args = argv
    settings = PreprocessSettings(image_size=int(image_size), beam_pipeline_args=beam_args)
    preprocess(validated, examples, transform, settings)
else:
    import apache_beam as beam
    with beam.Pipeline(argv=argv) as pipeline:
        _ = pipeline | beam.Create([1, 2]) | beam.Map(lambda x: x + 1)
print(json.dumps(outside))
"""


def _without_network(*argv: str, loopback: bool = False) -> subprocess.CompletedProcess:
    """``python -c _WITHOUT_NETWORK argv`` in a new network namespace (``unshare --net``),
    where no interface leads out; with ``loopback``, its lo is up (gRPC between a runner and
    its worker processes goes through it)."""
    unshare = shutil.which("unshare")
    prefix = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]
    if not unshare or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("cannot make a network namespace here (util-linux unshare)")
    command = [sys.executable, "-c", _WITHOUT_NETWORK, *argv]
    if loopback:
        command = ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    completed = subprocess.run(
        [*prefix, *command], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def test_beams_own_direct_runner_looks_for_prism_outside(tmp_path):
    """The control for the test below: in the namespace, the watch catches Beam's
    DirectRunner asking for github.com (prism_runner.py, _download_to_local_path) before it
    falls back (direct_runner.py, "Falling back to DirectRunner")."""
    completed = _without_network("beam", "--runner=DirectRunner", loopback=True)
    outside = json.loads(completed.stdout.splitlines()[-1])
    assert ["socket.getaddrinfo", "github.com"] in outside
    assert "Running pipeline with PrismRunner" in completed.stderr


@pytest.mark.parametrize(
    "beam_args, loopback",
    [
        (["--runner=DirectRunner"], False),
        (
            ["--runner=DirectRunner", "--direct_running_mode=multi_processing"]
            + ["--direct_num_workers=2"],
            True,
        ),
    ],
    ids=["in-memory", "two-worker-processes"],
)
def test_preprocess_runs_where_no_network_leads_anywhere(prepared, tmp_path, beam_args, loopback):
    """The real step, in a process with no route out (and, in memory, not even loopback up):
    it writes what it writes with a network, asks for no name and connects nowhere, and
    never tries Prism."""
    examples, transform = str(tmp_path / "examples"), str(tmp_path / "transform")
    completed = _without_network(
        "preprocess",
        str(IMAGE_SIZE),
        prepared["validated"],
        examples,
        transform,
        *beam_args,
        loopback=loopback,
    )
    assert json.loads(completed.stdout.splitlines()[-1]) == []
    assert "Beam runner: FnApiRunner" in completed.stderr
    assert "Running pipeline with PrismRunner" not in completed.stderr
    assert "Downloading prism" not in completed.stderr
    assert _examples(tmp_path / "examples") == _examples(prepared["examples"])
