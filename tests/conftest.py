"""Small real data the tests make, and the shared photos and weights when they are there."""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import emulators

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGCLF_SHARED", REPO.parent / "shared"))
CLOTHING = SHARED / "data" / "clothing-small"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"

needs_clothing = pytest.mark.skipif(
    not CLOTHING.is_dir(), reason=f"{CLOTHING} is absent (a fresh clone has no ../shared)"
)
needs_weights = pytest.mark.skipif(
    not MOBILENET_WEIGHTS.is_file(),
    reason=f"{MOBILENET_WEIGHTS} is absent (a fresh clone has no ../shared)",
)


def offline_imgclf() -> list[str]:
    """The command line of ``imgclf`` in a network namespace of its own (``unshare --net``,
    util-linux): no interface but a loopback that is down, so nothing can be downloaded.
    Skips where no namespace can be made."""
    unshare = shutil.which("unshare")
    if not unshare:
        pytest.skip("cannot make a network namespace here: no unshare (util-linux)")
    prefix = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("cannot make a network namespace here: unshare --net is not permitted")
    return [*prefix, sys.executable, "-m", "imgclf.pipelines.cli"]


def pytest_collection_modifyitems(items):
    """The whole-DAG runs first. `make test`'s worksteal gives each worker half the collection
    and a worker that runs dry steals from the end of the other's; in file order the DAG runs
    (two to four minutes each) sat at the end of the first half and often finished last, with
    the other core idle."""
    items.sort(key=lambda item: item.path.name != "test_local_run.py")


CLASS_COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
IMAGE_SIZE = 32


def encode_image(pixels: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def colour_image(
    colour: tuple[int, int, int], seed: int, size=(40, 48), image_format: str = "PNG"
) -> bytes:
    """A noisy patch of one colour: classes are separable, every image is different."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    return encode_image(pixels.astype(np.uint8), image_format)


def write_colour_tree(root: Path, per_class: int = 16, splits: tuple[str, ...] = ()) -> Path:
    """``root/<class>/*.png`` or, with ``splits``, ``root/<split>/<class>/*.png``."""
    for class_index, (label, colour) in enumerate(CLASS_COLOURS.items()):
        for split_index, split in enumerate(splits or ("",)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                seed = class_index * 10_000 + split_index * 1_000 + i
                (folder / f"{label}-{i:03d}.png").write_bytes(colour_image(colour, seed))
    return root


# Camera and phone photos (12 megapixels, either way up) down to photos smaller than the
# square: at IMAGE_SIZE they decode at 1/8, 1/8, 1/8, 1/4, 1/2 and full scale.
PHOTO_SIZES = ((4032, 3024), (3024, 4032), (1200, 900), (300, 200), (100, 80), (48, 40))
ORIENTATION_TAG = 0x0112


def photo(
    colour: tuple[int, int, int],
    seed: int,
    size: tuple[int, int] = (4032, 3024),
    orientation: int = 1,
    mode: str = "RGB",
    **jpeg_options,
) -> bytes:
    """A JPEG photo of ``size`` (width, height): smooth content at full resolution, as a
    camera's is (noise drawn at a low resolution and scaled up), in one colour's tint."""
    rng = np.random.default_rng(seed)
    coarse = np.clip(np.array(colour) + rng.normal(0, 40, (12, 16, 3)), 0, 255)
    image = Image.fromarray(coarse.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    tags = Image.Exif()
    if orientation != 1:
        tags[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", quality=90, exif=tags.tobytes(), **jpeg_options)
    return buffer.getvalue()


def write_photo_tree(root: Path) -> Path:
    """``root/<class>/*.jpg``: one JPEG of every size in ``PHOTO_SIZES`` per class, the
    portrait one stored sideways with an EXIF orientation, as phones store it."""
    for class_index, (label, colour) in enumerate(CLASS_COLOURS.items()):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, size in enumerate(PHOTO_SIZES):
            sideways = size[1] > size[0]
            stored = (size[1], size[0]) if sideways else size
            data = photo(colour, class_index * 100 + i, stored, orientation=6 if sideways else 1)
            (folder / f"{label}-{i}.jpg").write_bytes(data)
    return root


# Each label of the multi-label set is a square of its colour in its own corner.
LABEL_CORNERS = {"red": (0, 0), "green": (0, 1), "blue": (1, 0)}
LABEL_SUBSETS = [
    labels for size in (1, 2, 3) for labels in itertools.combinations(sorted(LABEL_CORNERS), size)
]


def squares_image(labels: tuple[str, ...], seed: int, size: int = 40) -> bytes:
    """Grey noise with a square of each label's colour in that label's corner."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(128 + rng.normal(0, 20, (size, size, 3)), 0, 255)
    half = size // 2
    for label in labels:
        row, column = LABEL_CORNERS[label]
        top, left = row * half + 2, column * half + 2
        pixels[top : top + half - 4, left : left + half - 4] = CLASS_COLOURS[label]
    return encode_image(pixels.astype(np.uint8))


def write_multi_label_set(root: Path, images: int = 70, listing: str = "labels.jsonl") -> Path:
    """``images`` squares images cycling through every non-empty label set, listed in a
    JSONL (labels as lists) or CSV (``a|b`` cells) file whose path is returned."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(images):
        labels = LABEL_SUBSETS[i % len(LABEL_SUBSETS)]
        (folder / f"image-{i:03d}.png").write_bytes(squares_image(labels, seed=i))
        rows.append((f"images/image-{i:03d}.png", labels))
    path = root / listing
    if listing.endswith(".jsonl"):
        lines = [json.dumps({"uri": uri, "labels": list(labels)}) for uri, labels in rows]
    else:
        lines = ["uri,labels"] + [f"{uri},{'|'.join(labels)}" for uri, labels in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def colour_tree(tmp_path_factory) -> Path:
    return write_colour_tree(tmp_path_factory.mktemp("colours"), per_class=20)


def _prepare(
    work: Path, data_uri: str, image_size: int = IMAGE_SIZE, **validate_options
) -> dict[str, str]:
    """ingest -> validate -> preprocess, as the pipeline chains them; the step folders."""
    from imgclf.components.data.ingest import ingest
    from imgclf.components.data.validate import validate
    from imgclf.components.parameters import IngestSettings, PreprocessSettings, ValidationRules
    from imgclf.components.transform.preprocess import preprocess

    paths = {name: str(work / name) for name in ("manifest", "validated", "examples", "transform")}
    ingest(IngestSettings(data_uri, train_fraction=0.6, validation_fraction=0.2), paths["manifest"])
    validate(
        paths["manifest"],
        paths["validated"],
        str(work / "report.html"),
        ValidationRules(min_side=16, min_images_per_class=3, **validate_options),
    )
    preprocess(
        paths["validated"],
        paths["examples"],
        paths["transform"],
        PreprocessSettings(image_size=image_size),
    )
    return paths


def _train_small_model(model_dir: Path, prepared: dict[str, str], **options) -> str:
    """A MobileNet 0.25 trained from scratch on ``prepared``, exported to ``model_dir``."""
    from imgclf.components.training.config import TrainConfig
    from imgclf.components.training.train import train

    config = TrainConfig(
        backbone="mobilenet",
        weights="none",
        alpha=0.25,
        image_size=IMAGE_SIZE,
        fine_tune_epochs=0,
        # Calibrated for these colour squares from scratch; the default cosine schedule is
        # tuned for fine-tuning pretrained backbones on photos.
        learning_rate=0.003,
        learning_rate_schedule="constant",
        augmentations="none",
        **options,
    )
    train(
        prepared["examples"],
        prepared["transform"],
        str(model_dir),
        config,
        keras_model_path=keras_model_of(model_dir),
    )
    return str(model_dir)


def keras_model_of(model_dir: str | Path) -> str:
    """Where the fixtures' training keeps the Keras model of the SavedModel in ``model_dir``."""
    return str(Path(model_dir).parent / "model.keras")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, colour_tree) -> dict[str, str]:
    """ingest -> validate -> preprocess on the colour tree."""
    return _prepare(tmp_path_factory.mktemp("prepared"), str(colour_tree))


@pytest.fixture(scope="session")
def prepared_photos(tmp_path_factory) -> dict[str, str]:
    """ingest -> validate -> preprocess on JPEG photos of every size in ``PHOTO_SIZES``."""
    work = tmp_path_factory.mktemp("prepared-photos")
    return _prepare(work, str(write_photo_tree(work / "photos")))


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, prepared) -> str:
    """A real serving SavedModel trained for a few epochs on the colour tree."""
    model_dir = tmp_path_factory.mktemp("model") / "saved_model"
    return _train_small_model(model_dir, prepared, epochs=3, batch_size=16)


@pytest.fixture(scope="session")
def multi_label_prepared(tmp_path_factory) -> dict[str, str]:
    """ingest -> validate -> preprocess on a JSONL listing of multi-label squares images."""
    work = tmp_path_factory.mktemp("multi-label")
    listing = write_multi_label_set(work / "data", images=140)
    return _prepare(work, str(listing))


@pytest.fixture(scope="session")
def multi_label_model(tmp_path_factory, multi_label_prepared) -> str:
    """A real multi-label serving SavedModel trained on the squares images."""
    model_dir = tmp_path_factory.mktemp("multi-label-model") / "saved_model"
    # From scratch, validation only improves once BatchNormalization's statistics settle
    # (after 30 to 40 steps here); patience must outlast that.
    return _train_small_model(
        model_dir, multi_label_prepared, epochs=12, early_stopping_patience=8, batch_size=8
    )


@pytest.fixture(scope="session")
def s3_emulator():
    """moto's S3 server (the protocol MinIO speaks), one per test worker."""
    with emulators.s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator():
    """fake-gcs-server, one per test worker."""
    with emulators.gcs_server() as server:
        yield server


@dataclass
class Bucket:
    """A fresh bucket on an emulator, named by ``root`` (``gs://…`` or ``s3://…``), with an
    fsspec client of its own to put and look at objects as another program would."""

    root: str
    fs: object

    def key(self, name: str) -> str:
        return f"{self.root.split('://', 1)[1]}/{name}"

    def put(self, name: str, data: bytes | str) -> None:
        self.fs.pipe_file(self.key(name), data.encode() if isinstance(data, str) else data)

    def put_tree(self, tree: Path, prefix: str) -> None:
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            self.put(f"{prefix}/{path.relative_to(tree).as_posix()}", path.read_bytes())

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self.key(name))

    def names(self, prefix: str) -> set[str]:
        start = len(self.key(""))
        return {found[start:] for found in self.fs.find(self.key(prefix))}


_bucket_numbers = itertools.count()


def _fresh_bucket(server, scheme: str, monkeypatch) -> Bucket:
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    name = f"photos-{os.getpid()}-{next(_bucket_numbers)}"
    server.make_bucket(name)
    return Bucket(f"{scheme}://{name}", server.filesystem())


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch) -> Bucket:
    return _fresh_bucket(gcs_emulator, "gs", monkeypatch)


@pytest.fixture
def s3_bucket(s3_emulator, monkeypatch) -> Bucket:
    return _fresh_bucket(s3_emulator, "s3", monkeypatch)


@pytest.fixture(params=["gs", "s3"])
def bucket(request, monkeypatch) -> Bucket:
    """A fresh bucket on each store: GCS (fake-gcs-server) and S3 (moto)."""
    server = request.getfixturevalue("gcs_emulator" if request.param == "gs" else "s3_emulator")
    return _fresh_bucket(server, request.param, monkeypatch)
