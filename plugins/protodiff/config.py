"""protodiff's configuration: the two methods' config classes and which keys make a generator (no torch,
imported by the registration and by ``train.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.contract.specs import check_range
from harness.toolkit.training_config import TrainConfig


@dataclass(frozen=True)
class CfgDiffConfig(TrainConfig):
    """The CFG generator and the downstream classifier. TrainConfig's fields (epochs, lr, ...) train the
    classifier; the fields below build, train and sample the generator."""

    # downstream classifier (a timm backbone; ``resnet``'s, so the real-image reference row compares like with like)
    backbone: str = "resnet18"
    pretrained: bool = False  # ImageNet weights, only if already in the local cache
    synthetic_per_class: int = 100  # generated images per class (IMPROVE: 100)
    # UNet (harness.toolkit.nn.unet; IMPROVE: channels 64 x [1, 2, 4, 8], 2 res blocks, dropout 0.1)
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)  # ProtoDiffusion: attention after every ResBlock
    dropout: float = 0.1
    emb_dim: int = 256  # time embedding 64 -> 256 -> 256; class embedding d -> 256 -> 256
    class_dim: int = 768  # d: the class vector's width (a prototype; IMPROVE's CLIP space is 768-d)
    # diffusion: linear beta 1e-4 -> 0.02 over T steps, eps-prediction
    timesteps: int = 1000
    label_dropout: float = 0.1  # p of training with the null condition (c = 0)
    guidance_scale: float = 1.8  # w of classifier-free guidance
    sample_steps: int = 50  # DDIM steps (evenly spaced over 0 ... T-1)
    eta: float = 0.0  # DDIM eta (0: deterministic)
    # generator training: AdamW, linear warm-up then cosine (ProtoDiffusion; peak lr 1e-4, brief decision 11)
    gen_epochs: int = 1500
    gen_steps: int = 0  # > 0: the budget in optimizer steps instead (epochs = steps / steps per epoch)
    gen_batch_size: int = 32  # IMPROVE: 16 per GPU on 2 GPUs
    gen_lr: float = 1e-4
    gen_weight_decay: float = 1e-4
    gen_warmup_epochs: int = 75  # ProtoDiffusion: epochs / 20
    gen_ema: float = 0.0  # > 0: sample with an EMA of the weights, this decay (averaging from a fifth of the steps on)
    gen_hflip: bool = True
    # reporting
    grid_per_class: int = 8  # generated images per class in samples_<generator>.png
    knn_k: int = 3  # k of the k-NN manifolds of precision / recall (Kynkaanniemi et al. 2019)

    def __post_init__(self):
        super().__post_init__()
        check_range("synthetic_per_class", self.synthetic_per_class, low=1)
        check_range("channels", self.channels, low=1)
        check_range("num_res_blocks", self.num_res_blocks, low=1)
        check_range("dropout", self.dropout, low=0.0, high=1.0)
        check_range("emb_dim", self.emb_dim, low=1)
        check_range("class_dim", self.class_dim, low=1)
        check_range("timesteps", self.timesteps, low=2)
        check_range("label_dropout", self.label_dropout, low=0.0, high=1.0, low_open=True)
        check_range("guidance_scale", self.guidance_scale, low=0.0)
        check_range("sample_steps", self.sample_steps, low=1, high=self.timesteps)
        check_range("eta", self.eta, low=0.0, high=1.0)
        if self.gen_steps <= 0:
            check_range("gen_epochs", self.gen_epochs, low=1)
        check_range("gen_steps", self.gen_steps, low=0)
        check_range("gen_batch_size", self.gen_batch_size, low=2)
        check_range("gen_lr", self.gen_lr, low=0.0, low_open=True)
        check_range("gen_weight_decay", self.gen_weight_decay, low=0.0)
        check_range("gen_warmup_epochs", self.gen_warmup_epochs, low=0)
        check_range("gen_ema", self.gen_ema, low=0.0, high=0.99999)
        check_range("grid_per_class", self.grid_per_class, low=1)
        check_range("knn_k", self.knn_k, low=1)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive integers; found {self.channel_mult}")


@dataclass(frozen=True)
class ProtoDiffConfig(CfgDiffConfig):
    """The prototype generator: the CFG generator's settings plus prototype learning (GCPL, brief Sec. 4a.1)."""

    encoder: str = "resnet18"  # timm name; CLIP towers too (vit_large_patch14_clip_224.openai, 768-d in IMPROVE)
    encoder_pretrained: bool = False  # pretrained weights, only if already in the local cache
    encoder_size: int = 0  # the encoder's input size (images are resized to it); 0: the data's size
    freeze_encoder: bool = False  # train only the projection and the prototypes (IMPROVE keeps CLIP frozen)
    prototypes_per_class: int = 1  # several: the prototype loss uses the nearest of the class's prototypes
    gamma: float = 2.0  # logits_c = -gamma min_j ||f - m_cj||^2 (ProtoDiffusion's code: s = 2)
    proto_lambda: float = 0.01  # weight of the prototype loss ||f - m_y||^2 (brief decision 10)
    proto_epochs: int = 30
    proto_lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        check_range("encoder_size", self.encoder_size, low=0)
        check_range("prototypes_per_class", self.prototypes_per_class, low=1)
        check_range("gamma", self.gamma, low=0.0, low_open=True)
        check_range("proto_lambda", self.proto_lambda, low=0.0)
        check_range("proto_epochs", self.proto_epochs, low=1)
        check_range("proto_lr", self.proto_lr, low=0.0, low_open=True)


# Which settings make a generator (its cache key) and which only sample from it or train the classifier.
CLASSIFIER_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) | {"backbone", "pretrained"}
SAMPLING_KEYS = frozenset({"synthetic_per_class", "guidance_scale", "sample_steps", "eta"})
REPORT_KEYS = frozenset({"grid_per_class", "knn_k"})


def generator_settings(config) -> dict:
    """The settings that determine the trained generator (and, for ``protodiff``, its prototypes)."""
    skip = CLASSIFIER_KEYS | SAMPLING_KEYS | REPORT_KEYS
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in skip}


def sampling_settings(config) -> dict:
    return {key: getattr(config, key) for key in sorted(SAMPLING_KEYS)}


# The classifier of every profile is ``resnet``'s, so the TSTR rows and the real-image reference compare
# training data only.
