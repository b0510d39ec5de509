"""Several pretrained backbones side by side on one input photo, as one encoder."""
from __future__ import annotations

import math

import torch
from torch import nn


def pooled_and_logits(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A backbone's pooled features and its class logits (timm models and `Ensemble` alike)."""
    if isinstance(backbone, Ensemble):
        return backbone(x)
    pooled = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
    return pooled, backbone.get_classifier()(pooled)


class Ensemble(nn.Module):
    """Each backbone's pooled features L2-normalised, side by side and scaled to unit length (so each
    contributes equally to a cosine), with the backbones' class logits averaged. The input photo comes
    at the largest size and is resized (bilinear: the sizes differ by under 15 %) to each backbone's own size."""

    def __init__(self, backbones: list[nn.Module], sizes: list[int]) -> None:
        super().__init__()
        if len({b.num_classes for b in backbones}) != 1:
            raise ValueError("an ensemble's backbones must share their classes")
        self.backbones = nn.ModuleList(backbones)
        self.sizes, self.input_size = sizes, max(sizes)
        self.num_features = sum(b.num_features for b in backbones)
        self.num_classes = backbones[0].num_classes

    def resized(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if size == self.input_size:
            return x
        return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, logits = zip(*(pooled_and_logits(b, self.resized(x, size)) for b, size in zip(self.backbones, self.sizes)))
        unit = [nn.functional.normalize(p, dim=1) for p in pooled]
        return torch.cat(unit, dim=1) / math.sqrt(len(unit)), torch.stack(logits).mean(dim=0)
