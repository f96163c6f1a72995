"""Where each step runs on a cluster: images, GPUs, resources, retries, timeouts, the data and
serving volumes, and how the steps reach object storage.

The defaults live in ``cluster.yaml`` beside this module; ``imgclf compile`` flags override
them. ``kfp.local`` ignores all of it: locally every step runs in this Python environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml
from kfp import dsl, kubernetes
from kubernetes.utils.quantity import parse_quantity

from imgclf.components.environment import STEP_IMAGE_VARIABLE

DEFAULTS_FILE = Path(__file__).with_name("cluster.yaml")
STEPS = (
    "preflight",
    "fingerprint",
    "ingest",
    "validate",
    "preprocess",
    "untuned",
    "tune",
    "train",
    "evaluate",
    "push",
)
# The steps that read or write <serving_root>: the preflight's check that it is writable,
# drift and baseline, and the push itself.
SERVING_STEPS = ("preflight", "validate", "evaluate", "push")
# The steps that read the images under data_uri (or look for them: the preflight):
# fingerprinting, listing, decoding, transforming, scoring the test split, and the warmup
# requests.
DATA_STEPS = (
    "preflight",
    "fingerprint",
    "ingest",
    "validate",
    "preprocess",
    "evaluate",
    "push",
)
# The steps that need kfp and nothing of this project's dependencies.
LIGHT_STEPS = ("untuned",)
GCP_KEY_DIR = "/var/secrets/google"
SHM_PATH = "/dev/shm"


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True)
class Retry:
    count: int
    backoff: str
    factor: float
    max: str


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """``KEY[=VALUE][:EFFECT]``, as ``kubectl taint`` writes a taint."""
        taint, _, effect = text.partition(":")
        key, equals, value = taint.partition("=")
        if not key:
            raise ValueError(f"A toleration needs a key: KEY[=VALUE][:EFFECT], not {text!r}.")
        return cls(key, "Equal" if equals else "Exists", value or None, effect or None)


@dataclass(frozen=True)
class ClusterSettings:
    step_image: str
    gpu_image: str
    light_image: str
    gpu_steps: tuple[str, ...]
    accelerator: str
    gpu_count: int
    node_selector: dict[str, str]
    tolerations: tuple[Toleration, ...]
    shm_size: str
    resources: dict[str, Resources]
    preset: str
    retries: dict[str, Retry]
    timeouts_seconds: dict[str, int]
    serving_claim: str = ""
    serving_mount_path: str = "/models"
    data_claim: str = ""
    data_mount_path: str = "/data"
    gcp_secret: str = ""
    s3_endpoint: str = ""
    s3_secret: str = ""
    s3_secret_keys: tuple[str, str] = ("accesskey", "secretkey")

    @classmethod
    def load(cls, path: str | Path = DEFAULTS_FILE, preset: str | None = None) -> ClusterSettings:
        """The file's settings, the GPU pool's placement from ``preset`` (default: the file's
        ``preset``)."""
        raw = yaml.safe_load(Path(path).read_text())
        gpu, serving, data = raw["gpu"], raw.get("serving") or {}, raw.get("data") or {}
        credentials, s3 = raw.get("credentials") or {}, raw.get("s3") or {}
        preset = preset or raw["preset"]
        presets = raw.get("presets") or {}
        if preset not in presets:
            raise ValueError(f"Unknown preset {preset!r}; presets in {path}: {', '.join(presets)}.")
        placement = presets[preset]
        settings = cls(
            step_image=raw["images"]["step"],
            gpu_image=raw["images"]["gpu"],
            light_image=raw["images"]["light"],
            gpu_steps=tuple(gpu["steps"]),
            accelerator=gpu["accelerator"],
            gpu_count=int(gpu["count"]),
            node_selector={
                str(k): str(v) for k, v in (placement.get("node_selector") or {}).items()
            },
            tolerations=tuple(Toleration(**t) for t in placement.get("tolerations") or ()),
            shm_size=str(gpu["shm_size"]),
            resources={s: Resources(**r) for s, r in raw["resources"].items()},
            preset=preset,
            retries={s: Retry(**r) for s, r in (raw.get("retries") or {}).items()},
            timeouts_seconds={s: int(t) for s, t in (raw.get("timeouts_seconds") or {}).items()},
            serving_claim=serving.get("claim") or "",
            serving_mount_path=serving.get("mount_path") or cls.serving_mount_path,
            data_claim=data.get("claim") or "",
            data_mount_path=data.get("mount_path") or cls.data_mount_path,
            gcp_secret=credentials.get("gcp_secret") or "",
            s3_endpoint=s3.get("endpoint") or "",
            s3_secret=s3.get("secret") or "",
            s3_secret_keys=tuple(s3.get("secret_keys") or cls.s3_secret_keys),
        )
        settings.check()
        return settings

    def replace(self, **changes) -> ClusterSettings:
        changed = dataclasses.replace(self, **changes)
        changed.check()
        return changed

    def check(self) -> None:
        named = {*self.gpu_steps, *self.resources, *self.retries, *self.timeouts_seconds}
        unknown = sorted(named - set(STEPS))
        if unknown:
            raise ValueError(f"Unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}.")
        if self.gpu_count < 0:
            raise ValueError(f"GPU count must be 0 or more, not {self.gpu_count}.")
        self._check_shm_fits()
        if len(self.s3_secret_keys) != 2:
            raise ValueError(
                "s3.secret_keys names two keys of the Secret: the access key's and the secret "
                f"key's, not {list(self.s3_secret_keys)}."
            )

    def _check_shm_fits(self) -> None:
        """A memory-backed emptyDir is a tmpfs whose pages count against the container's
        memory limit (Kubernetes, "Volumes: emptyDir"): a /dev/shm as large as the limit
        leaves the step nothing to run in."""
        if self.gpu_count <= 0:
            return
        shm = parse_quantity(self.shm_size)
        for step in self.gpu_steps:
            if step in self.resources and shm >= parse_quantity(self.resources[step].memory_limit):
                raise ValueError(
                    f"shm_size {self.shm_size} must be under {step}'s memory limit "
                    f"{self.resources[step].memory_limit}: /dev/shm is memory the step's "
                    "limit pays for. Lower --shm-size or raise the limit with --resources."
                )

    def apply(self, task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
        """Sets the step's image, resources, GPU placement, retries, timeout, volumes and
        credentials."""
        on_gpu = step in self.gpu_steps and self.gpu_count > 0
        image = self.gpu_image if step in self.gpu_steps else self.step_image
        image = self.light_image if step in LIGHT_STEPS else image
        task.set_container_image(image)
        # A remote Beam runner's workers run this image too.
        task.set_env_variable(STEP_IMAGE_VARIABLE, image)
        if step in self.resources:
            wanted = self.resources[step]
            task.set_cpu_request(wanted.cpu).set_cpu_limit(wanted.cpu_limit)
            task.set_memory_request(wanted.memory).set_memory_limit(wanted.memory_limit)
        if on_gpu:
            self._place_on_gpu(task)
        if step in self.retries:
            retry = self.retries[step]
            task.set_retry(retry.count, retry.backoff, retry.factor, retry.max)
        if step in self.timeouts_seconds:
            kubernetes.set_timeout(task, self.timeouts_seconds[step])
        if self.serving_claim and step in SERVING_STEPS:
            kubernetes.mount_pvc(task, self.serving_claim, self.serving_mount_path)
        if self.data_claim and step in DATA_STEPS:
            kubernetes.mount_pvc(task, self.data_claim, self.data_mount_path)
        if self.gcp_secret:
            kubernetes.use_secret_as_volume(task, self.gcp_secret, GCP_KEY_DIR)
            task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{GCP_KEY_DIR}/key.json")
        self._reach_s3(task)
        return task

    def _reach_s3(self, task: dsl.PipelineTask) -> None:
        """botocore's own variables: the endpoint (MinIO's service) and the keys from a Secret,
        whose values never enter the pipeline YAML."""
        if self.s3_endpoint:
            task.set_env_variable("AWS_ENDPOINT_URL", self.s3_endpoint)
        if self.s3_secret:
            access_key, secret_key = self.s3_secret_keys
            kubernetes.use_secret_as_env(
                task,
                self.s3_secret,
                {access_key: "AWS_ACCESS_KEY_ID", secret_key: "AWS_SECRET_ACCESS_KEY"},
            )

    def _place_on_gpu(self, task: dsl.PipelineTask) -> None:
        task.set_accelerator_type(self.accelerator).set_accelerator_limit(self.gpu_count)
        for key, value in self.node_selector.items():
            kubernetes.add_node_selector(task, key, value)
        for toleration in self.tolerations:
            kubernetes.add_toleration(
                task, toleration.key, toleration.operator, toleration.value, toleration.effect
            )
        kubernetes.empty_dir_mount(task, "shm", SHM_PATH, medium="Memory", size_limit=self.shm_size)
