"""Property-based and fuzz tests: whatever a listing, a label or a file holds, the pipeline
answers with its own clear errors, never with an escape from the dataset or a crash."""

import json
import string
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from imgclf.components import manifest
from imgclf.components.data import listings
from imgclf.components.data.quarantine import inspect_image
from imgclf.components.serving import signature

# Path segments as users (and attackers) write them: names, dots, dot-dots, odd characters.
SEGMENTS = st.one_of(
    st.sampled_from(["..", ".", "", "~", "images", "a b", "ü", "%2e%2e"]),
    st.text(alphabet=string.ascii_letters + string.digits + "._- ", min_size=1, max_size=8),
)
RELATIVE_PATHS = (
    st.lists(SEGMENTS, min_size=1, max_size=6).map("/".join).filter(lambda p: not p.startswith("/"))
)
SAFE_NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)


@given(relative=RELATIVE_PATHS)
def test_a_relative_uri_never_resolves_outside_a_local_listings_folder(tmp_path_factory, relative):
    base = tmp_path_factory.getbasetemp() / "listing"
    try:
        resolved = listings._resolve(str(base), relative, "line 2")
    except ValueError as error:
        assert "points outside the listing's folder" in str(error)
        return
    assert Path(resolved).is_relative_to(base.resolve())


@given(
    store=st.sampled_from(["gs", "s3", "minio"]),
    prefix=st.sampled_from(["", "data", "data/listings"]),
    relative=RELATIVE_PATHS,
)
def test_a_relative_uri_never_resolves_outside_a_bucket_listings_folder(store, prefix, relative):
    base = f"{store}://photos/{prefix}".rstrip("/")
    try:
        resolved = listings._resolve(base, relative, "line 2")
    except ValueError as error:
        assert "points outside the listing's folder" in str(error)
        return
    assert resolved == base or resolved.startswith(base + "/")
    assert "/../" not in resolved + "/"


@given(
    store=st.sampled_from(["gs", "s3", "minio"]),
    prefix=st.sampled_from(["", "data", "data/listings"]),
    names=st.lists(SAFE_NAMES, min_size=1, max_size=4),
)
def test_a_plain_relative_path_always_resolves_inside_a_bucket_listings_folder(
    store, prefix, names
):
    base = f"{store}://photos/{prefix}".rstrip("/")
    resolved = listings._resolve(base, "/".join(names), "line 2")
    assert resolved == base + "/" + "/".join(names)


@given(labels=st.lists(st.text(min_size=1), min_size=1, max_size=5))
def test_a_label_set_survives_the_manifest_cell_unless_a_label_holds_the_separator(labels):
    frame = pd.DataFrame({manifest.LABELS_COLUMN: [manifest.join_labels(labels)]})
    if any(manifest.LABEL_SEPARATOR in label for label in labels):
        return  # ingest refuses these (below); the cell could not keep them apart
    assert manifest.label_sets(frame) == [sorted(set(labels))]


@given(
    labels=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4),
    uri=SAFE_NAMES,
)
def test_a_jsonl_label_list_is_kept_or_refused_by_its_line(tmp_path_factory, labels, uri):
    listing = tmp_path_factory.mktemp("jsonl") / "labels.jsonl"
    listing.write_text(json.dumps({"uri": uri, "labels": labels}) + "\n")
    try:
        [(_, parsed, _)] = listings.read_listing(str(listing))
    except ValueError as error:
        assert str(error).startswith("labels.jsonl line 1: ")
        return
    assert parsed == [label.strip() for label in labels if label.strip()]
    assert not any(manifest.LABEL_SEPARATOR in label for label in parsed)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.lists(st.text(max_size=12), min_size=0, max_size=4), min_size=0, max_size=6),
    header=st.sampled_from(
        ["uri,label", "uri,labels", "uri,label,split", "label,uri", "path,class", ""]
    ),
)
def test_any_csv_listing_parses_or_is_refused_with_a_clear_error(tmp_path, header, rows):
    listing = tmp_path / "listing.csv"
    body = "\n".join(",".join(cell.replace("\n", " ") for cell in row) for row in rows)
    listing.write_text(f"{header}\n{body}\n" if header else body, encoding="utf-8")
    try:
        parsed = listings.read_listing(str(listing))
    except ValueError as error:
        assert str(error).startswith(("listing.csv", str(listing)))
        return
    for uri, label, split in parsed:
        assert Path(uri).is_relative_to(tmp_path) or Path(uri).is_absolute()
        assert label and split in (None, "train", "validation", "test")


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=2048))
def test_fuzzed_bytes_are_quarantined_by_validation_without_an_exception(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "file.jpg"
    path.write_bytes(data)
    reason, brightness = inspect_image(str(path))
    assert (reason == "") == (brightness is not None)


JPEG_START = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
PNG_START = bytes.fromhex("89504e470d0a1a0a")


@pytest.fixture(scope="module")
def served(trained_model):
    return signature.ServedModel(trained_model)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=1024),
        st.binary(max_size=512).map(lambda tail: JPEG_START + tail),
        st.binary(max_size=512).map(lambda tail: PNG_START + tail),
    )
)
def test_fuzzed_bytes_through_the_serving_signature_are_refused_not_crashed(served, data):
    try:
        outputs = served.predict([data])
    except tf.errors.InvalidArgumentError:
        return  # what TF Serving answers as INVALID_ARGUMENT
    assert outputs[signature.SCORES_KEY].shape[0] == 1


SECRET_MARKERS = ("BEGIN PRIVATE KEY", "private_key", "AKIA", "client_secret", "password")


def test_the_compiled_pipeline_holds_no_credentials_and_images_run_as_non_root(tmp_path):
    from imgclf.pipelines import cli

    compiled = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "-o", str(compiled)]) == 0
    text = compiled.read_text()
    assert not [marker for marker in SECRET_MARKERS if marker.lower() in text.lower()]
    spec = next(yaml.safe_load_all(text))
    for executor in spec["deploymentSpec"]["executors"].values():
        # No credentials passed as variables: the only one names the step's image.
        assert [e["name"] for e in executor["container"]["env"]] == ["IMGCLF_STEP_IMAGE"]
    repo = REPO
    for dockerfile in (repo / "containers").glob("Dockerfile*"):
        users = [
            line.split()[1]
            for line in dockerfile.read_text().splitlines()
            if line.startswith("USER ")
        ]
        assert users and users[-1] not in ("root", "0"), dockerfile.name
