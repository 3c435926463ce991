"""DSCL + PBSD: Decoupled Contrastive Learning with patch-based self-distillation
(Xuan & Zhang, AAAI 2024, arXiv:2403.06151; SY-Xuan/DSCL@79f8cef).

Stage 1 (representation): online encoder (backbone + 2-layer MLP head, no BN) and a momentum key
encoder updated before each key forward; a labelled FIFO queue of keys. The decoupled SupCon
loss gives the own key a fixed share 1/(1+beta) of the target mass; PBSD distils, for L patches
of the query view, the similarity distribution (own key + queue) of the ROI-aligned patch
feature from the query's feature map (teacher) into the patch encoded as its own small image
(student):  L = L_dscl + lambda * L_pbsd.
Stage 2 (classifier): frozen backbone, re-initialised linear classifier, class-balanced batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..config import integer, list_of, number, one_of
from ..data.patches import PatchViews
from ..losses import DSCLLoss, PBSDLoss
from ..losses.precision import at_least_fp32
from ..memory import LabeledQueue, MomentumEncoder, shuffled_key_forward
from ..models import feature_map
from .base import Method, register
from .two_stage import TWO_STAGE_DEFAULTS, TwoStageMixin


class _Encoder(nn.Module):
    """Backbone + Linear-ReLU-Linear head (no BN), L2-normalised output."""

    def __init__(self, backbone: nn.Module, proj_hidden: int, proj_dim: int):
        super().__init__()
        self.backbone = backbone
        feat = backbone.num_features
        self.head = nn.Sequential(nn.Linear(feat, proj_hidden), nn.ReLU(inplace=True), nn.Linear(proj_hidden, proj_dim))

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(at_least_fp32(self.head(pooled)), dim=1)  # >= fp32 under autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone(x))

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = feature_map(self.backbone, x)
        return self.project(fmap.mean(dim=(2, 3))), fmap


@register
class DSCL(TwoStageMixin, Method):
    name = "dscl"
    rules = {"contrast_batch": one_of(("local", "global")), "weighted_beta": number(0), "queue_size": integer(1),
             "num_patches": integer(1), "patch_size": integer(1),
             "roi_output_size": integer(1), "patch_scale": list_of(number(0, 1, lo_open=True)),
             "shuffle_bn_groups": integer(1)}
    defaults = {
        "temperature": 0.07,
        "weighted_beta": 8.0,  # own-key target share 1/(1+beta) (the released script's value)
        "pbsd_weight": 1.5,  # lambda
        "momentum": 0.999,
        "queue_size": 65536,  # K
        "queue_random_init_labels": False,  # True: the authors' random labels in [0, 1000)
        "proj_hidden": 2048,
        "proj_dim": 128,
        "num_patches": 5,  # L
        "patch_size": 64,
        "patch_scale": [0.05, 0.6],
        "roi_output_size": 2,
        "contrast_batch": "local",  # under DDP: each process's q, k (+ the queue), as the authors; global: all
        # moot with model.sync_bn (statistics global); see tailcon.memory.shuffle_bn
        "shuffle_bn": True,  # keys' BN statistics from a random subset: across ranks (the authors) or sub-batches
        "shuffle_bn_groups": 2,  # one process: BN sub-batches of the keys (the authors ran 2 GPUs)
        **TWO_STAGE_DEFAULTS,
        "linear_epochs": 40, "linear_lr": 10.0, "linear_batch_size": 2048, "linear_schedule": "step",
        "linear_milestones": [20, 30], "linear_view": "sim_blur", "linear_bn_train": True,
    }

    def __init__(self, cfg, num_classes, cls_num_list):
        super().__init__(cfg, num_classes, cls_num_list)
        h = self.hparams
        self.encoder = _Encoder(self.backbone, int(h["proj_hidden"]), int(h["proj_dim"]))
        self.key_encoder = MomentumEncoder(self.encoder, float(h["momentum"]))
        self.queue = LabeledQueue(int(h["queue_size"]), int(h["proj_dim"]),
                                  random_init_labels=bool(h["queue_random_init_labels"]))
        self.dscl_loss = DSCLLoss(float(h["temperature"]), float(h["weighted_beta"]),
                                  gather=h["contrast_batch"] == "global")
        self.pbsd_loss = PBSDLoss(float(h["temperature"]))
        # stage 2 starts from a fresh classifier: N(0, 0.01^2) weights, zero bias (SY-Xuan/DSCL@79f8cef equal_lincls.py)
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, std=0.01)
            nn.init.zeros_(self.classifier.bias)
        self.setup_stage()

    def train_transform(self, info):
        if self.stage == "linear":
            return super().train_transform(info)
        h = self.hparams
        return PatchViews(info, int(h["num_patches"]), int(h["patch_size"]), tuple(h["patch_scale"]))

    def view_recipes(self):
        return (self.hparams["linear_view"],)

    def training_step(self, views, labels):
        if self.stage == "linear":
            return self.linear_step(views, labels)
        h = self.hparams
        query, key, patches, boxes = views
        b, num_patches = patches.shape[:2]
        self.key_encoder.update(self.encoder)  # before the keys, as the authors do
        q, fmap = self.encoder.forward_with_map(query)
        if h["shuffle_bn"] and not self.cfg["model"]["sync_bn"]:
            k = shuffled_key_forward(self.key_encoder, key, int(h["shuffle_bn_groups"]))
        else:
            k = self.key_encoder(key)
        # teacher: ROI-Align on the query's map (adaptive sampling, non-aligned), 2x2 averaged, projected
        image_index = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(num_patches)
        rois = torch.cat([image_index[:, None], boxes.reshape(-1, 4)], dim=1).to(fmap.dtype)
        pooled = roi_align(fmap, rois, output_size=int(h["roi_output_size"]),
                           spatial_scale=fmap.shape[-1] / query.shape[-1], sampling_ratio=-1, aligned=False)
        teacher = self.encoder.project(pooled.mean(dim=(2, 3))).view(b, num_patches, -1).transpose(0, 1)
        # students: one forward per patch index (separate BN batches, as in the authors' code)
        students = torch.stack([self.encoder(patches[:, i]) for i in range(num_patches)])
        queue_keys, queue_labels = self.queue.keys.clone(), self.queue.labels.clone()  # pushed before backward
        loss_dscl = self.dscl_loss(q, k, queue_keys, queue_labels, labels)
        loss_pbsd = self.pbsd_loss(teacher, students, k, queue_keys)
        self.queue.push(k, labels)
        loss = loss_dscl + float(h["pbsd_weight"]) * loss_pbsd
        return {"loss": loss, "loss_dscl": loss_dscl.detach(), "loss_pbsd": loss_pbsd.detach()}
