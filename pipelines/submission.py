"""Runs and recurring runs on Kubeflow Pipelines through the kfp client: typed parameters, a
namespace, the client's credentials, and the pipeline registered as a named, versioned pipeline.

The kfp CLI's ``recurring-run create`` sends every parameter as a string, which the backend
refuses for a number, a boolean or a list; the client sends the values it is given, so the
words ``NAME=VALUE`` are parsed here by the pipeline's own declarations first.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from imgclf.components.parameters import Parameter, parameters, parse
from imgclf.pipelines.pipeline import PIPELINE_NAME

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    """How to reach the KFP API, as ``kfp.Client`` takes it."""

    endpoint: str | None = None
    namespace: str = "kubeflow"
    existing_token: str | None = None
    cookies: str | None = None
    service_account_token_path: str | None = None

    def client(self):
        import kfp
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = None
        if self.service_account_token_path:
            credentials = ServiceAccountTokenVolumeCredentials(self.service_account_token_path)
        return kfp.Client(
            host=self.endpoint,
            namespace=self.namespace,
            existing_token=self.existing_token,
            cookies=self.cookies,
            credentials=credentials,
        )


def typed_arguments(words: list[str]) -> dict:
    """``NAME=VALUE`` words as the pipeline's typed parameters; lists as JSON lists."""
    declared = {parameter.name: parameter for parameter in parameters()}
    arguments = {}
    for word in words:
        name, equals, text = word.partition("=")
        if not equals:
            raise ValueError(f"Parameters are NAME=VALUE words, not {word!r}.")
        if name not in declared:
            raise ValueError(
                f"Unknown parameter {name!r}; the pipeline's: {', '.join(sorted(declared))}."
            )
        arguments[name] = _typed(declared[name], text)
    return arguments


def _typed(parameter: Parameter, text: str):
    if parameter.type is list:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise ValueError(
                f"{parameter.name} is a list: give it as JSON, e.g. "
                f"{parameter.name}='[\"--runner=DataflowRunner\"]', not {text!r}."
            )
        return value
    try:
        return parse(parameter.type, text)
    except ValueError as error:
        raise ValueError(f"{parameter.name}: {error}") from None


def release_version(package: str | Path) -> str:
    """The pipeline version a package is registered as: the release and the package's digest,
    so that the same release recompiled the same registers once."""
    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]
    return f"{importlib.metadata.version('imgclf')}-{digest}"


def register(client, package: str | Path) -> tuple[str, str]:
    """The pipeline's id and the id of this package's version, uploading what is missing."""
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    version_name = release_version(package)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=PIPELINE_NAME)
        pipeline_id = pipeline.pipeline_id
        log.info("Registered pipeline %s (%s)", PIPELINE_NAME, pipeline_id)
    version_id = _version_id(client, pipeline_id, version_name)
    if version_id is None:
        version = client.upload_pipeline_version(
            str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id
        )
        version_id = version.pipeline_version_id
        log.info("Registered version %s of %s", version_name, PIPELINE_NAME)
    return pipeline_id, version_id


def _version_id(client, pipeline_id: str, version_name: str) -> str | None:
    listed = client.list_pipeline_versions(
        pipeline_id=pipeline_id,
        page_size=1,
        filter=json.dumps(
            {
                "predicates": [
                    {"key": "display_name", "operation": "EQUALS", "string_value": version_name}
                ]
            }
        ),
    )
    versions = listed.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def submit(
    connection: Connection, package: str | Path, experiment: str, run_name: str, arguments: dict
):
    """One run now, of this package's registered version."""
    client, target = _registered(connection, package, experiment)
    return client.run_pipeline(job_name=run_name, params=arguments, **target)


def schedule(
    connection: Connection,
    package: str | Path,
    experiment: str,
    name: str,
    cron: str,
    arguments: dict,
):
    """A recurring run: one at a time, no catch-up after a pause, each reading the data as of
    its slot (the pipeline's schedule-time placeholder)."""
    client, target = _registered(connection, package, experiment)
    return client.create_recurring_run(
        job_name=name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=arguments,
        **target,
    )


def _registered(connection: Connection, package: str | Path, experiment: str):
    """A client, and the experiment, pipeline and version a run of ``package`` goes to."""
    client = connection.client()
    pipeline_id, version_id = register(client, package)
    # create_experiment returns the experiment of that name when there is one.
    experiment_id = client.create_experiment(
        experiment, namespace=connection.namespace
    ).experiment_id
    return client, {
        "experiment_id": experiment_id,
        "pipeline_id": pipeline_id,
        "version_id": version_id,
    }
