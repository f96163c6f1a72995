"""The trainer's config: the declared training settings, the data's image size, and where this
run keeps its checkpoints and logs. No TensorFlow: the CLI checks a config before a run starts."""

from __future__ import annotations

from dataclasses import dataclass

from imgclf.components.model import augmentation
from imgclf.components.parameters import PreprocessSettings, TrainSettings


@dataclass
class TrainConfig(TrainSettings):
    # A fact of the data: train and tune take it from the transform graph.
    image_size: int = PreprocessSettings.image_size
    # Where TensorBoard logs go, one run per stage; "" for none.
    tensorboard_dir: str = ""
    # Where each epoch is backed up, so that a killed and restarted step resumes; "" for none.
    checkpoint_dir: str = ""
    # An object-store URI that holds a copy of checkpoint_dir, refreshed after every epoch: a
    # pod's disk goes with the pod, and Keras writes no object store but GCS. "" for none.
    checkpoint_mirror: str = ""

    def combination_problems(self) -> list[str]:
        problems = super().combination_problems()
        if self.xla and augmentation.geometric(self.augmentations):
            problems.append(
                f"xla cannot compile the {', '.join(augmentation.geometric(self.augmentations))} "
                "augmentation (its image warp has no XLA kernel); drop it from augmentations or "
                "turn xla off."
            )
        return problems

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"
