"""The supervised-loop settings, importable without torch (method configs inherit them)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.contract.specs import check_range


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the supervised loop; method configs inherit these and add their own."""

    epochs: int = 20
    steps: int = 0  # > 0: the budget in optimizer steps instead (epochs = max(min_epochs, steps / steps per epoch))
    min_epochs: int = 1  # with a step budget: at least this many epochs
    batch_size: int = 128
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | multistep | constant
    milestones: tuple[int, ...] = ()  # multistep: epochs where the lr is multiplied by 0.1
    warmup_epochs: int = 0
    hflip: bool = True
    vflip: bool = False
    rotation: float = 15.0  # degrees, uniform in [-rotation, rotation]
    rotation_padding: str = "reflection"  # what fills the corners a rotation or crop uncovers: reflection | zeros | border
    crop_scale: float = 0.0  # > 0: random-resized crop with area in [crop_scale, 1] (aspect 3/4-4/3), resized back
    eval_every: int = 1  # validate every N epochs (and after the last)

    def __post_init__(self):
        if self.steps <= 0:
            check_range("epochs", self.epochs, low=1)
        check_range("steps", self.steps, low=0)
        check_range("min_epochs", self.min_epochs, low=1)
        check_range("batch_size", self.batch_size, low=1)
        check_range("optimizer", self.optimizer, choices=("adamw", "adam", "sgd"))
        check_range("lr", self.lr, low=0.0, low_open=True)
        check_range("momentum", self.momentum, low=0.0, high=1.0)
        check_range("weight_decay", self.weight_decay, low=0.0)
        check_range("schedule", self.schedule, choices=("cosine", "multistep", "constant"))
        check_range("warmup_epochs", self.warmup_epochs, low=0)
        check_range("rotation", self.rotation, low=0.0, high=180.0)
        check_range("rotation_padding", self.rotation_padding, choices=("reflection", "zeros", "border"))
        check_range("crop_scale", self.crop_scale, low=0.0, high=1.0)
        check_range("eval_every", self.eval_every, low=1)
