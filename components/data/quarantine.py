"""The quarantine: files that would break or poison training, found before any is decoded for
real, each with its reason.

Every file is decoded in full with the op preprocess uses (where preprocess decodes a large JPEG
at a reduced scale, the same libjpeg fails on exactly the files the full decode fails on:
tests/components/transform/test_features.py), so a file that passes here cannot crash the
transform. Files that do not decode, or are smaller than ``min_side``, are quarantined; a
header over ``max_pixels`` (a decompression bomb) is refused before decoding. Copies of a file
that also sits in an earlier split are dropped, so that no image is trained and tested on.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from imgclf.components import manifest, storage

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_TF_ERROR_NOISE = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]")
_DECODERS = 8
_PROGRESS_EVERY = 500


def check_files(
    frame: pd.DataFrame, min_side: int, max_pixels: int
) -> tuple[list[str], list[float | None]]:
    """A quarantine reason per row (empty for a usable image) and the brightness of every
    image that decodes. Runs the decode checks in parallel."""

    def check(row) -> tuple[str, float | None]:
        if row.bytes == 0:
            return "empty file", None
        # The header's size is checked before any decoding: a decompression bomb is a few
        # kilobytes that decode to gigabytes.
        if pd.notna(row.width) and row.width * row.height > max_pixels:
            return (
                f"{row.width}x{row.height} is {row.width * row.height:,} pixels, over "
                f"max_pixels={max_pixels:,}; refused before decoding"
            ), None
        error, brightness = inspect_image(row.uri)
        if error:
            return error, None
        if row.format not in SUPPORTED_FORMATS:
            return (
                f"unsupported format {row.format or 'unknown'}; "
                f"supported: {', '.join(SUPPORTED_FORMATS)}"
            ), brightness
        if min(row.width, row.height) < min_side:
            return f"{row.width}x{row.height} is smaller than min_side={min_side}", brightness
        return "", brightness

    reasons, brightness = [], []
    with ThreadPoolExecutor(max_workers=_DECODERS) as pool:
        for done, (reason, level) in enumerate(pool.map(check, frame.itertuples()), start=1):
            reasons.append(reason)
            brightness.append(level)
            if done % _PROGRESS_EVERY == 0 or done == len(frame):
                log.info("Checked %d/%d files", done, len(frame))
    return reasons, brightness


def leaked_copies(frame: pd.DataFrame) -> pd.DataFrame:
    """Copies of a file that also sits in an earlier split (train, validation, test order),
    with the reason they are dropped."""
    order = frame["split"].map({split: i for i, split in enumerate(manifest.SPLITS)})
    ranked = frame.assign(_order=order).sort_values(["sha256", "_order", "uri"])
    first = ranked.drop_duplicates("sha256").set_index("sha256")
    later = ranked[
        ranked.duplicated("sha256") & (ranked["split"] != ranked["sha256"].map(first["split"]))
    ]
    reasons = [
        f"identical to {first.at[sha, 'uri']} in {first.at[sha, 'split']}: dropped from "
        f"{split} so that no image is both trained and evaluated on"
        for sha, split in zip(later["sha256"], later["split"], strict=True)
    ]
    return later.drop(columns="_order").assign(quarantine_reason=reasons)


def inspect_image(uri: str) -> tuple[str, float | None]:
    """``(why the file does not decode the way preprocess decodes it, or "", its mean
    brightness in [0, 1] when it decodes)``."""
    import tensorflow as tf

    try:
        data = storage.read_bytes(uri)
    except OSError as error:
        return f"unreadable: {error}", None
    if not data:
        return "empty file", None
    try:
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        message = _TF_ERROR_NOISE.sub("", error.message.splitlines()[0]).strip()
        return f"does not decode as an image: {message}", None
    return "", float(tf.reduce_mean(tf.cast(pixels, tf.float32))) / 255.0
