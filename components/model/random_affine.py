"""One random affine warp for rotation, zoom and translation together.

Keras' ``RandomRotation``, ``RandomZoom`` and ``RandomTranslation`` each resample the whole
image; composing their matrices and resampling once costs one warp instead of three and
interpolates once, so the image also blurs less.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def affine_transform_rows(angle, scale, shift_x, shift_y, height, width):
    """Per image, the 8 numbers of the projective transform that ``affine_transform`` takes
    (from output pixel to input pixel): rotate by ``angle`` radians and scale by ``scale``
    (input pixels per output pixel: above 1 zooms out) about the centre, then move the content
    by ``shift_x``, ``shift_y`` pixels. Arguments are ``[batch]`` tensors."""
    cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    zeros = ops.zeros_like(cos)
    return ops.stack(
        [
            cos,
            -sin,
            centre_x - cos * centre_x + sin * centre_y - shift_x,
            sin,
            cos,
            centre_y - sin * centre_x - cos * centre_y - shift_y,
            zeros,
            zeros,
        ],
        axis=-1,
    )


@keras.saving.register_keras_serializable(package="imgclf")
class RandomAffine(keras.layers.Layer):
    """Random rotation (a fraction of a full turn either way, as ``RandomRotation`` counts
    it), zoom and translation (fractions of the side) as one bilinear warp with a black fill;
    the identity outside training."""

    def __init__(self, rotation=0.0, zoom=0.0, translation=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.translation = rotation, zoom, translation
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def uniform(limit):
            return keras.random.uniform((shape[0],), -limit, limit, seed=self.generator)

        transform = affine_transform_rows(
            angle=uniform(self.rotation * 2 * math.pi),
            scale=1.0 + uniform(self.zoom),
            shift_x=uniform(self.translation) * width,
            shift_y=uniform(self.translation) * height,
            height=height,
            width=width,
        )
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="constant"
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "zoom": self.zoom,
            "translation": self.translation,
            "seed": self.seed,
        }
