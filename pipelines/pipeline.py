"""The DAG: preflight -> fingerprint -> ingest -> validate -> preprocess -> [tune] -> train (GPU) ->
evaluate -> [blessed] push.

Its parameters and their descriptions come from ``imgclf.components.parameters``
(``interface``); each step gets the settings it uses as one dict.
"""

from kfp import dsl

from imgclf.components import kfp_steps
from imgclf.components.parameters import (
    GROUPS,
    BlessingRules,
    IngestSettings,
    PreprocessSettings,
    PushSettings,
    ServingTarget,
    TrainSettings,
    TuneSettings,
    ValidationRules,
)
from imgclf.pipelines.cluster import ClusterSettings
from imgclf.pipelines.interface import (
    DESCRIPTION,
    pipeline_docstring,
    pipeline_signature,
    step_settings,
)
from imgclf.pipelines.tfjob import worker_job

PIPELINE_NAME = "imgclf"


def create_pipeline(
    cluster: ClusterSettings | None = None,
    scheduled_at: str = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
):
    """The pipeline function, with where each step runs on a cluster (``cluster.yaml``'s
    defaults unless given) and what tells the fingerprint step the time the run was scheduled
    for (KFP's placeholder, resolved by backends from 2.17.0; ``kfp.local`` cannot resolve it:
    pass "" there)."""
    cluster = cluster or ClusterSettings.load()
    signature = pipeline_signature()

    def imgclf(*args, **kwargs) -> dsl.Artifact:
        values = signature.bind(*args, **kwargs).arguments

        def settings(*groups):
            return step_settings(values, *groups)

        # Every run checks that its settings, data, serving root and weights can work before
        # anything reads an image; it has no retries and hands nothing on, so the cache keys
        # of the steps after it do not change.
        checked = kfp_steps.preflight(
            settings=settings(*GROUPS), beam_pipeline_args=values["beam_pipeline_args"]
        )
        cluster.apply(checked, "preflight").set_caching_options(False)
        # New data must be seen on every scheduled run: the fingerprint is taken every time,
        # and ingest and everything after it are cached on it (unchanged data trains nothing).
        fingerprinted = kfp_steps.fingerprint(
            settings=settings(IngestSettings), scheduled_at=scheduled_at
        ).after(checked)
        cluster.apply(fingerprinted, "fingerprint").set_caching_options(False)
        ingested = kfp_steps.ingest(
            settings=settings(IngestSettings),
            data_fingerprint=fingerprinted.outputs["digest"],
            data_snapshot=fingerprinted.outputs["snapshot"],
        )
        cluster.apply(ingested, "ingest")

        validated = kfp_steps.validate(
            manifest=ingested.outputs["manifest"],
            settings=settings(ValidationRules, ServingTarget),
        )
        cluster.apply(validated, "validate")
        preprocessed = kfp_steps.preprocess(
            validated_manifest=validated.outputs["validated_manifest"],
            settings=settings(PreprocessSettings),
            beam_pipeline_args=values["beam_pipeline_args"],
        )
        cluster.apply(preprocessed, "preprocess")

        examples = preprocessed.outputs["examples"]
        transform_graph = preprocessed.outputs["transform_graph"]
        with dsl.If(values["tune_trials"] > 0, name="tuning-requested"):
            tuned = kfp_steps.tune(
                examples=examples,
                transform_graph=transform_graph,
                settings=settings(TrainSettings, TuneSettings),
            )
            cluster.apply(tuned, "tune")
        with dsl.Else(name="no-tuning"):
            untuned = cluster.apply(kfp_steps.untuned(), "untuned")
        trained = kfp_steps.train(
            examples=examples,
            transform_graph=transform_graph,
            settings=settings(TrainSettings),
            hyperparameters=dsl.OneOf(tuned.outputs["Output"], untuned.output),
            worker_job=worker_job(cluster),
        )
        cluster.apply(trained, "train")

        # The candidate and the test images it is judged on, and pushed with as warmup requests.
        candidate = {
            "model": trained.outputs["model"],
            "validated_manifest": validated.outputs["validated_manifest"],
        }
        evaluated = kfp_steps.evaluate(
            **candidate,
            keras_model=trained.outputs["keras_model"],
            settings=settings(BlessingRules, ServingTarget),
        )
        # The baseline is whatever is served now: never reuse a cached verdict.
        cluster.apply(evaluated, "evaluate").set_caching_options(False)

        with dsl.If(evaluated.outputs["Output"] == True):  # noqa: E712 - KFP condition
            pushed = kfp_steps.push(
                **candidate,
                evaluation=evaluated.outputs["evaluation"],
                settings=settings(PushSettings, ServingTarget),
            )
            cluster.apply(pushed, "push").set_caching_options(False)
        return evaluated.outputs["evaluation"]

    imgclf.__signature__ = signature.replace(return_annotation=dsl.Artifact)
    imgclf.__doc__ = pipeline_docstring()
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(imgclf)
