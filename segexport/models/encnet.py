"""EncNet.

Zhang, Dana, Shi, Zhang, Wang, Tyagi and Agrawal, "Context Encoding for Semantic Segmentation",
CVPR 2018 (https://arxiv.org/abs/1803.08904). ``paper`` size: a dilated ResNet-50/101 at output
stride 8 (torchvision's keys, so ImageNet files load through ``--backbone-checkpoint``), a 3x3
conv to 512 channels, and the Context Encoding Module: an Encoding layer with K = 32 learned
codewords ``d_k`` and smoothing factors ``s_k`` (soft assignment ``a_ik = softmax_k(-s_k ||x_i -
d_k||^2)`` over the map's pixels ``x_i``, aggregated residuals ``e_k = sum_i a_ik (x_i - d_k)``),
BN + ReLU over the codewords, their mean, and a fully connected layer with a sigmoid that scales
the feature channels; dropout and a 1x1 classifier; an auxiliary FCN head on stage 3 for
training, as the paper's. ``tiny`` keeps the graph on a narrow ResNet with 64 channels and 8
codewords.

The paper's SE-loss: a fully connected head on the encoded vector predicts which classes the
image holds, trained with binary cross-entropy weighted by the recipe's ``se_weight`` (0.2, the
default of the authors' released code). It runs only in ``forward_train``; ``forward``, and so the exported graph, never
computes it (its weights are not in the ONNX file). The
squared distances expand as ``||x||^2 - 2 x.d + ||d||^2`` (the dot products a 1x1 convolution
with the codewords) instead of an ``[N, HW, K, C]`` tensor; the graph has Conv, ReduceSum,
Softmax and one batched MatMul for the aggregation.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel, choose_backbone
from segexport.nn import build_backbone
from segexport.nn.blocks import conv_bn_relu

PAPER_BACKBONES = ("resnet50", "resnet101")
TINY_BACKBONES = ("resnet_tiny",)


class Encoding(nn.Module):
    """The Encoding layer: ``[N, C, H, W]`` features -> ``[N, K, C]`` aggregated residuals."""

    def __init__(self, channels: int, codewords: int) -> None:
        super().__init__()
        bound = 1.0 / (codewords * channels) ** 0.5
        self.codewords = nn.Parameter(torch.empty(codewords, channels).uniform_(-bound, bound))
        self.scale = nn.Parameter(torch.empty(codewords).uniform_(-1.0, 0.0))  # the paper's initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        pixels = x.reshape(n, c, -1).transpose(1, 2)  # [N, HW, C]
        d = self.codewords
        # ||x_i - d_k||^2 = ||x_i||^2 - 2 x_i.d_k + ||d_k||^2, without the [N, HW, K, C] tensor. The
        # dot products are a 1x1 convolution with the codewords (ONNX Runtime's convolutions give
        # the same per-image results at batch 1 and 4).
        dots = F.conv2d(x, d[:, :, None, None]).reshape(n, d.shape[0], -1).transpose(1, 2)  # [N, HW, K]
        dist = pixels.square().sum(-1, keepdim=True) - 2.0 * dots + d.square().sum(-1)
        assign = torch.softmax(self.scale * dist, dim=-1)  # [N, HW, K]
        # sum_i a_ik (x_i - d_k) = (X^T A)_k - (sum_i a_ik) d_k, both from one batched MatMul of
        # [X, 1]^T with A. ONNX Runtime rounded its ReduceSum over the pixel axis, and the MatMul
        # the other way round (A^T [X, 1]), differently at batch 1 and 4; this one it does not.
        ones = torch.ones_like(x[:, :1]).reshape(n, 1, -1)
        weighted = torch.matmul(torch.cat([x.reshape(n, c, -1), ones], dim=1), assign).transpose(1, 2)  # [N, K, C+1]
        return weighted[..., :-1] - weighted[..., -1:] * d


class ContextEncoding(nn.Module):
    """Encoding -> BN + ReLU -> mean over codewords -> FC + sigmoid channel attention."""

    def __init__(self, channels: int, codewords: int) -> None:
        super().__init__()
        self.encoding = Encoding(channels, codewords)
        self.norm = nn.BatchNorm1d(codewords)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_code(x)[0]

    def forward_with_code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attended features and the encoded vector ``[N, C]`` (the SE-loss head's input)."""
        codes = F.relu(self.norm(self.encoding(x))).unbind(dim=1)  # K x [N, C]
        # The mean over codewords as a chain of adds: ONNX Runtime's ReduceMean over that axis
        # rounded differently at batch 1 and 4.
        encoded = functools.reduce(torch.add, codes) / len(codes)
        gamma = torch.sigmoid(self.fc(encoded))
        return F.relu(x + x * gamma[:, :, None, None]), encoded  # the paper's released code: x + x * gamma


class EncHead(nn.Module):
    """3x3 conv -> Context Encoding Module -> dropout -> 1x1 classifier, on the deepest feature."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int, codewords: int,
                 se_loss: bool = True) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels, 3)
        self.context = ContextEncoding(channels, codewords)
        self.drop = nn.Dropout2d(0.1)
        self.cls = nn.Conv2d(channels, num_classes, 1)
        # The SE-loss head: class-presence logits from the encoded vector (training only).
        self.se = nn.Linear(channels, num_classes) if se_loss else None

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.cls(self.drop(self.context(self.conv(feats[-1]))))

    def forward_train(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and the SE head's class-presence logits ``[N, classes]`` (None without it)."""
        x, encoded = self.context.forward_with_code(self.conv(feats[-1]))
        return self.cls(self.drop(x)), (None if self.se is None else self.se(encoded))


class AuxHead(nn.Module):
    """The auxiliary FCN head on stage 3 (training only; never exported)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(in_channels, channels, 3), nn.Dropout2d(0.1),
                                  nn.Conv2d(channels, num_classes, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.body(feats[-2])


class EncNet(SegmentationModel):
    """The shell, whose training forward also returns the SE head's class-presence logits."""

    classifier: EncHead

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Logits, auxiliary logits (both at input size) and class-presence logits ``[N, classes]``
        (the training loop adds the recipe's ``se_weight`` times their binary cross-entropy)."""
        feats = self.backbone(x)
        out, presence = self.classifier.forward_train(feats)
        aux = None if self.aux_classifier is None else self._resize(self.aux_classifier(feats), x)
        return self._resize(out, x), aux, presence


@register_model(
    "encnet",
    summary="EncNet: dilated ResNet (OS 8), Context Encoding Module (Encoding layer, channel attention)",
    paper="Zhang et al., Context Encoding for Semantic Segmentation, CVPR 2018",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet50", "tiny": "resnet_tiny"},
)
def encnet(*, size: str = "tiny", num_classes: int = 21, backbone: str | None = None,
           aux: bool = True, se_loss: bool = True) -> SegmentationModel:
    """EncNet (https://arxiv.org/abs/1803.08904).

    Args:
        size: "paper" (512 channels, 32 codewords) or "tiny" (64 channels, 8 codewords).
        num_classes: output classes.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
        aux: build the auxiliary FCN head (training only).
        se_loss: build the SE-loss head (class presence from the encoded vector; training only).
    """
    paper = size == "paper"
    name = choose_backbone("encnet", size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    body = build_backbone(name, output_stride=8)
    channels, codewords = (512, 32) if paper else (64, 8)
    info = body.feature_info
    head = EncHead(info.channels[-1], num_classes, channels=channels, codewords=codewords, se_loss=se_loss)
    aux_head = AuxHead(info.channels[-2], num_classes, 256 if paper else 32) if aux else None
    return EncNet(body, head, aux_classifier=aux_head, input_divisor=info.output_stride)
