"""Small real data the tests make, and the shared photos and weights when they are there."""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import threading
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture
def gcs_bucket(monkeypatch):
    """An empty bucket ``photos`` on an in-memory emulator; yields a google-cloud-storage
    bucket handle."""
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage as gcs

    from imgclf.components import storage

    _honour_create_only_preconditions(monkeypatch)
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    server = create_server("localhost", port, in_memory=True, default_bucket="photos")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://localhost:{port}")
    storage.gcs_client.cache_clear()
    try:
        yield gcs.Client().bucket("photos")
    finally:
        storage.gcs_client.cache_clear()
        server.stop()


def _honour_create_only_preconditions(monkeypatch) -> None:
    """Teaches the emulator GCS's ``ifGenerationMatch=0`` (create the object only if none
    exists, else 412), which it ignores and which our version claims rely on."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    original = objects.insert
    lock = threading.Lock()

    def insert(request, response, storage, *args, **kwargs):
        if request.query.get("ifGenerationMatch") != ["0"]:
            return original(request, response, storage, *args, **kwargs)
        name = request.query["name"][0] if "name" in request.query else None
        name = name or request.data["meta"]["name"]
        with lock:
            try:
                storage.get_file_obj(request.params["bucket_name"], name)
            except NotFound:
                return original(request, response, storage, *args, **kwargs)
            response.status = HTTPStatus.PRECONDITION_FAILED

    monkeypatch.setattr(objects, "insert", insert)
    for _, handlers in server.HANDLERS:
        if handlers.get("POST") is original:
            monkeypatch.setitem(handlers, "POST", insert)
