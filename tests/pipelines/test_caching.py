"""Caching that pays: on unchanged data a scheduled run trains nothing.

The compiled pipeline is run twice under KFP's cache-key rules (``tests/kfp_cache.py``, from
the KFP v2 backend's driver/cache.go and cacheutils/cache.go), with the fingerprint step's real
outputs on real files."""

import os

import kfp_cache
import pytest
from kfp import compiler
from PIL import Image

from imgclf.components.data.ingest import fingerprint
from imgclf.components.parameters import IngestSettings
from imgclf.pipelines.cluster import ClusterSettings
from imgclf.pipelines.pipeline import create_pipeline

CACHED_STEPS = ("ingest", "validate", "preprocess", "train")
ARGUMENTS = {"serving_root": "gs://models/serving"}


def _photos(root):
    for label, colour in (("red", (200, 0, 0)), ("blue", (0, 0, 200))):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16 + i, 16), colour).save(root / label / f"{i}.png")


def _compiled(tmp_path, name, **cluster) -> tuple[dict, dict]:
    path = tmp_path / name
    settings = ClusterSettings.load().replace(**cluster) if cluster else None
    compiler.Compiler().compile(create_pipeline(settings), str(path))
    return kfp_cache.load(path)


def _nightly_run(backend, data, night: int) -> dict:
    """A recurring run's: its slot's time, the fingerprint of the data at that time."""
    scheduled_at = f"2026-12-{night:02d}T02:00:00Z"
    found = fingerprint(IngestSettings(data_uri=str(data), data_snapshot=scheduled_at))
    return backend.run(
        {**ARGUMENTS, "data_uri": str(data)},
        {
            "fingerprint": {"digest": found.digest, "snapshot": found.snapshot},
            "evaluate": {"Output": True},
        },
        scheduled_at,
    )


@pytest.fixture
def data(tmp_path):
    _photos(tmp_path / "photos")
    # Written "yesterday": before every slot below.
    for path in (tmp_path / "photos").rglob("*.png"):
        os.utime(path, (1764633600, 1764633600))  # 2025-12-02
    return tmp_path / "photos"


def test_a_rerun_on_unchanged_data_hits_the_cache_from_ingest_through_train(tmp_path, data):
    backend = kfp_cache.Backend(*_compiled(tmp_path, "pipeline.yaml"))
    first = _nightly_run(backend, data, 2)
    second = _nightly_run(backend, data, 3)
    assert all(first[step] == "miss" for step in CACHED_STEPS)
    assert {step: second[step] for step in CACHED_STEPS} == dict.fromkeys(CACHED_STEPS, "hit")
    # What is served now is read on every run: the fingerprint, the verdict and the push.
    assert second["fingerprint"] == second["evaluate"] == "miss"
    assert second["condition-4/push"] == "miss"
    assert second["condition-branches-1/condition-2"] == "skipped"  # no tuning asked
    assert second["condition-branches-1/condition-3/untuned"] == "hit"


def test_a_changed_image_misses_the_cache(tmp_path, data):
    backend = kfp_cache.Backend(*_compiled(tmp_path, "pipeline.yaml"))
    _nightly_run(backend, data, 2)
    Image.new("RGB", (20, 20), (0, 0, 100)).save(data / "blue" / "0.png")
    os.utime(data / "blue" / "0.png", (1764633700, 1764633700))
    changed = _nightly_run(backend, data, 3)
    assert {step: changed[step] for step in CACHED_STEPS} == dict.fromkeys(CACHED_STEPS, "miss")


def test_an_image_added_after_the_slot_waits_for_the_next_run(tmp_path, data):
    """A file written after the slot's time is not this run's data: the run still hits."""
    backend = kfp_cache.Backend(*_compiled(tmp_path, "pipeline.yaml"))
    _nightly_run(backend, data, 2)
    Image.new("RGB", (20, 20), (0, 0, 100)).save(data / "blue" / "late.png")
    os.utime(data / "blue" / "late.png", (1798416000, 1798416000))  # 2026-12-28
    assert _nightly_run(backend, data, 3)["train"] == "hit"
    assert _nightly_run(backend, data, 29)["train"] == "miss"


def test_a_changed_step_image_misses_the_cache(tmp_path, data):
    spec, platform = _compiled(tmp_path, "pipeline.yaml")
    backend = kfp_cache.Backend(spec, platform)
    _nightly_run(backend, data, 2)
    backend.spec, _ = _compiled(tmp_path, "newer.yaml", step_image="ghcr.io/imgclf/imgclf:0.2.0")
    rebuilt = _nightly_run(backend, data, 3)
    assert rebuilt["ingest"] == rebuilt["validate"] == "miss"
