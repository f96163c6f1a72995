"""The serving SavedModel: raw image bytes in, scores and class names out.

The signature runs the transform graph written by preprocess (decode, RGB, resize) and then the
Keras model, so a TF Serving client sends the encoded file and nothing else. Its two halves are
signatures of their own: ``preprocess`` (bytes to the pixels the model takes) and
``score_pixels`` (pixels to scores), for clients that decode themselves and for the
robustness measurement, which perturbs the pixels between the two. The transform layer
is a tf_keras object (tensorflow-transform's own Keras), so the two are joined in a serving
function exported by ``keras.export.ExportArchive`` rather than as layers of one Keras model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from imgclf.components import artifacts
from imgclf.components.transform import features

SIGNATURE_NAME = "serving_default"
INPUT_KEY = "image_bytes"
SCORES_KEY = "scores"
CLASSES_KEY = "classes"
LABEL_KEY = "label"
# Multi-label models only: bool [None, C], whether each class is present at its threshold.
POSITIVES_KEY = "positives"
PREPROCESS_SIGNATURE = "preprocess"
SCORE_PIXELS_SIGNATURE = "score_pixels"
# uint8 [None, size, size, 3] out of preprocess; score_pixels takes them as float32.
PIXELS_KEY = "pixels"


def export(
    model: keras.Model,
    transform_dir: str,
    class_names: Sequence[str],
    image_size: int,
    export_dir: str,
    thresholds: Sequence[float] | None = None,
) -> None:
    """Writes the SavedModel with the ``serving_default`` signature of the serving contract;
    with per-class ``thresholds`` (multi-label), a ``positives`` output as well."""
    transform_layer = tft.TFTransformOutput(transform_dir).transform_features_layer()
    class_name_tensor = tf.constant(list(class_names))

    def preprocess(image_bytes: tf.Tensor) -> tf.Tensor:
        transformed = transform_layer({features.IMAGE_BYTES_KEY: image_bytes})
        return features.parse_images(transformed[features.IMAGE_KEY], image_size)

    def score_pixels(pixels: tf.Tensor) -> tf.Tensor:
        return tf.cast(model(tf.cast(pixels, tf.float32), training=False), tf.float32)

    def serve(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = score_pixels(preprocess(image_bytes))
        outputs = {
            SCORES_KEY: scores,
            CLASSES_KEY: tf.tile(class_name_tensor[tf.newaxis, :], [tf.shape(scores)[0], 1]),
            LABEL_KEY: tf.gather(class_name_tensor, tf.argmax(scores, axis=1)),
        }
        if thresholds is not None:
            outputs[POSITIVES_KEY] = scores >= tf.constant(list(thresholds), tf.float32)
        return outputs

    # ExportArchive tracks every Keras variable the endpoint touches; the transform layer's
    # vocabulary tables and assets are tracked explicitly.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(transform_layer)
    image_bytes_spec = tf.TensorSpec([None], tf.string, name=INPUT_KEY)
    pixels_spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=PIXELS_KEY)
    archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=[image_bytes_spec])
    archive.add_endpoint(
        PREPROCESS_SIGNATURE,
        lambda image_bytes: {PIXELS_KEY: preprocess(image_bytes)},
        input_signature=[image_bytes_spec],
    )
    archive.add_endpoint(
        SCORE_PIXELS_SIGNATURE,
        lambda pixels: {SCORES_KEY: score_pixels(pixels)},
        input_signature=[pixels_spec],
    )
    archive.write_out(export_dir, verbose=False)


class ServedModel:
    """A SavedModel loaded the way TF Serving loads it: through its serving signature only."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._loaded = tf.saved_model.load(model_dir)
        self._signature = self._loaded.signatures[SIGNATURE_NAME]

    def predict(self, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        outputs = self._signature(**{INPUT_KEY: tf.constant(list(images), tf.string)})
        return {key: value.numpy() for key, value in outputs.items()}

    def predict_batches(
        self, images: Iterable[bytes], batch_size: int = 32
    ) -> dict[str, np.ndarray]:
        return _in_batches(self.predict, images, batch_size)

    @property
    def scores_pixels(self) -> bool:
        """Whether the model has the ``preprocess`` and ``score_pixels`` signatures (models
        exported before them have not)."""
        return {PREPROCESS_SIGNATURE, SCORE_PIXELS_SIGNATURE} <= set(self._loaded.signatures)

    def pixels(self, images: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """The images as the model sees them: uint8 ``[images, size, size, 3]``, decoded and
        resized by its own transform graph."""
        preprocess = self._loaded.signatures[PREPROCESS_SIGNATURE]

        def batch_pixels(batch: Sequence[bytes]) -> dict[str, np.ndarray]:
            outputs = preprocess(**{INPUT_KEY: tf.constant(list(batch), tf.string)})
            return {PIXELS_KEY: outputs[PIXELS_KEY].numpy()}

        return _in_batches(batch_pixels, images, batch_size)[PIXELS_KEY]

    def score_pixels(self, pixels: tf.Tensor) -> tf.Tensor:
        """Scores of float32 pixels, differentiable with respect to them."""
        signature = self._loaded.signatures[SCORE_PIXELS_SIGNATURE]
        return signature(**{PIXELS_KEY: tf.cast(pixels, tf.float32)})[SCORES_KEY]


def _in_batches(predict, images: Iterable[bytes], batch_size: int) -> dict[str, np.ndarray]:
    batch: list[bytes] = []
    results: list[dict[str, np.ndarray]] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            results.append(predict(batch))
            batch = []
    if batch:
        results.append(predict(batch))
    if not results:
        raise ValueError("No images to predict.")
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def is_saved_model(path: str | Path) -> bool:
    return (Path(path) / artifacts.SAVED_MODEL).exists()


def top_scores(outputs: dict[str, np.ndarray], row: int, k: int = 3) -> dict[str, float]:
    """The ``k`` best classes of one prediction, for people to read."""
    scores = outputs[SCORES_KEY][row]
    classes = outputs[CLASSES_KEY][row]
    best = np.argsort(scores)[::-1][:k]
    return {classes[i].decode(): round(float(scores[i]), 4) for i in best}
