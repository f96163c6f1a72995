"""Push: publish a blessed SavedModel as the next TF Serving version, with warmup requests, the
data profile and a model card, after checking in a fresh process that TF Serving could load it."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from imgclf.components import artifacts
from imgclf.components.parameters import PushSettings, ServingTarget
from imgclf.components.serving import infra_validation, layout, models_config, signature
from imgclf.components.serving.server_status import ServingServer
from imgclf.components.serving.warmup import warmup_images, write_warmup_requests

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    version: int
    path: str
    removed_versions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def push(
    model_dir: str,
    serving: ServingTarget,
    manifest_dir: str,
    evaluation_dir: str | None = None,
    settings: PushSettings | None = None,
) -> PushResult:
    """Copies ``model_dir`` to ``<serving_root>/<model_name>/<next version>/``.

    The copy, with ``assets.extra/tf_serving_warmup_requests`` built from a few of the
    manifest's images and the data profile validate wrote beside the manifest, is assembled in
    a staging folder and published so that TF Serving never loads it half-written (see
    :mod:`imgclf.components.serving.layout`). ``serving_root`` may be a local path or ``gs://``.
    """
    settings = settings or PushSettings()
    root, name = serving.serving_root, serving.model_name
    if not signature.is_saved_model(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a SavedModel (no saved_model.pb).")
    staged = layout.staging_dir(root, name)
    try:
        shutil.copytree(model_dir, staged, dirs_exist_ok=True)
        extra = staged / artifacts.ASSETS_EXTRA
        write_warmup_requests(extra / artifacts.WARMUP_REQUESTS, warmup_images(manifest_dir), name)
        # The next run's validate compares its data with this profile (drift).
        data_profile = Path(manifest_dir) / artifacts.DATA_PROFILE
        if data_profile.exists():
            shutil.copy(data_profile, extra)
        card = model_card(name, manifest_dir, evaluation_dir, extra)
        (extra / artifacts.MODEL_CARD).write_text(json.dumps(card, indent=2))
        infra_validation.check_in_fresh_process(str(staged))
        version, path = layout.publish(str(staged), root, name)
    except BaseException:
        layout.discard(staged)
        raise
    server = ServingServer(serving.serving_url, serving.config_poll_seconds)
    state = models_config.record_push(root, name, version, server)
    log.info(
        "Pushed %s as version %d (%s): %s",
        name,
        version,
        "the newest" if state.pinned is None else f"canary beside stable {state.pinned}",
        path,
    )
    protected = frozenset(models_config.protected_versions(root, name))
    removed = layout.prune(root, name, settings.keep_versions, protected)
    if removed:
        log.info("Removed versions %s, keeping the newest %d", removed, settings.keep_versions)
    return PushResult(version=version, path=path, removed_versions=removed)


def model_card(model_name: str, manifest_dir: str, evaluation_dir: str | None, extra: Path) -> dict:
    """What a person auditing a served version wants in one file: when, on what data, how
    it was trained, how it scored and why it was blessed."""

    def load(path: Path) -> dict | None:
        return json.loads(path.read_text()) if path.exists() else None

    evaluation = (
        load(Path(evaluation_dir) / artifacts.EVALUATION_RECORD) if evaluation_dir else None
    )
    return {
        "model_name": model_name,
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": load(Path(manifest_dir) / artifacts.VALIDATION_RECORD),
        "training": load(extra / artifacts.TRAINING_RECORD),
        "evaluation": evaluation
        and {
            key: evaluation[key]
            for key in ("candidate", "baseline", "baseline_version", "blessed", "checks")
        },
    }
