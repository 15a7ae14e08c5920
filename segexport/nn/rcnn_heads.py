"""The parts of Mask R-CNN and PANet: feature pyramid, RPN head, multi-scale RoIAlign, box and
mask heads. Attribute names are torchvision's (``inner_blocks``, ``layer_blocks``,
``cls_logits``, ``fc6``, ``mask_fcn_logits``...), so a ``maskrcnn_resnet50_fpn`` state dict loads
key for key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segexport.nn import detection, detection_ops


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A biased conv wrapped as torchvision's ``Conv2dNormActivation`` without norm (key ``.0.``)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2))


class FeaturePyramid(nn.Module):
    """Lin et al.'s FPN: lateral 1x1 convs, top-down 2x nearest sums, 3x3 output convs, and a
    stride-2 max pool of the coarsest output as an extra level (P6, used by the RPN only).

    Args:
        in_channels: channels of the backbone's stride-4 to stride-32 features.
        channels: the pyramid's width (256 in the paper).
        extra_level: add P6.
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int, *, extra_level: bool = True) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(_conv(c, channels, 1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_conv(channels, channels, 3) for _ in in_channels)
        self.extra_level = extra_level
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's FPN initialisation
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        inner = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](inner))
        if self.extra_level:
            outs.append(F.max_pool2d(outs[-1], 1, 2))
        return outs


class BottomUpPath(nn.Module):
    """PANet's bottom-up path augmentation: N2 = P2, N(i+1) = conv3x3(relu(conv3x3/2(N(i))) + P(i+1)),
    each conv followed by ReLU (Liu et al., section 3.1). The extra level (P6) is kept as is."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(levels - 1))
        self.fuse = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(levels - 1))
        self.levels = levels

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = [pyramid[0]]
        for i in range(self.levels - 1):
            down = F.relu(self.down[i](outs[-1]))
            outs.append(F.relu(self.fuse[i](down + pyramid[i + 1])))
        return outs + pyramid[self.levels:]


class RPNHead(nn.Module):
    """A 3x3 conv + ReLU shared over levels, then per anchor an objectness logit and 4 box deltas."""

    def __init__(self, channels: int, anchors: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels, 3))
        self.cls_logits = nn.Conv2d(channels, anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, H*W*A]`` objectness and ``[N, H*W*A, 4]`` deltas, cell-major as the anchors are."""
        t = F.relu(self.conv(level))
        n = level.shape[0]
        logits = self.cls_logits(t).permute(0, 2, 3, 1).reshape(n, -1)
        deltas = self.bbox_pred(t).permute(0, 2, 3, 1).reshape(n, -1, 4)
        return logits, deltas


class LevelPooler(nn.Module):
    """Multi-scale RoIAlign over pyramid levels (stride 4 first).

    ``assign`` (Mask R-CNN) pools each RoI from one level, k = floor(4 + log2(sqrt(wh) / 224))
    clamped to the levels (Lin et al., eq. 1); otherwise (PANet's adaptive feature pooling) it
    returns the RoI pooled from every level, ``[L, K, C, s, s]``, for the head to fuse.

    Every level is pooled for every RoI and the assigned one is selected by a 0/1 mask, so the
    exported graph keeps static shapes; the selection is exact.
    """

    CANONICAL_SCALE = 224.0
    CANONICAL_LEVEL = 4

    def __init__(self, strides: tuple[int, ...], size: int, sampling_ratio: int = 2, *, assign: bool = True) -> None:
        super().__init__()
        self.strides, self.size, self.sampling_ratio, self.assign = strides, size, sampling_ratio, assign

    def levels(self, rois: torch.Tensor) -> torch.Tensor:
        """Each RoI's level index into ``strides``."""
        k_min = int(math.log2(self.strides[0]))
        scale = torch.sqrt(detection.box_area(rois))
        k = torch.floor(self.CANONICAL_LEVEL + torch.log2(scale / self.CANONICAL_SCALE + 1e-6))
        return (k.clamp(k_min, k_min + len(self.strides) - 1) - k_min).long()

    def forward(self, pyramid: list[torch.Tensor], rois: torch.Tensor, batch_index: torch.Tensor, *,
                differentiable: bool = False) -> torch.Tensor:
        """Pooled ``[K, C, s, s]`` features (``[L, K, C, s, s]`` without ``assign``).

        ``differentiable`` (training) calls the plain function; inference the custom operator,
        which exports as ``RoiAlign``. Both compute the same numbers.
        """
        if differentiable and self.assign:
            return self._assigned_only(pyramid, rois, batch_index)
        pooled = []
        for level, stride in zip(pyramid, self.strides):
            if differentiable:
                p = detection.roi_align(level, rois, batch_index, (self.size, self.size), 1.0 / stride,
                                        self.sampling_ratio)
            else:
                p = detection_ops.roi_align(level, rois, batch_index, self.size, self.size, 1.0 / stride,
                                            self.sampling_ratio)
            pooled.append(p)
        stacked = torch.stack(pooled)
        if not self.assign:
            return stacked
        onehot = F.one_hot(self.levels(rois), len(self.strides)).t().to(stacked.dtype)  # [L, K]
        return (stacked * onehot[:, :, None, None, None]).sum(0)

    def _assigned_only(self, pyramid: list[torch.Tensor], rois: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Training's pooling: each level pools only its own RoIs (the same values, a quarter of the work)."""
        levels = self.levels(rois)
        out = pyramid[0].new_zeros((rois.shape[0], pyramid[0].shape[1], self.size, self.size))
        for i, (level, stride) in enumerate(zip(pyramid, self.strides)):
            mine = torch.nonzero(levels == i).flatten()
            if len(mine):
                out = out.index_put((mine,), detection.roi_align(
                    level, rois[mine], batch_index[mine], (self.size, self.size), 1.0 / stride, self.sampling_ratio))
        return out


class BoxHead(nn.Module):
    """Two fully connected layers (``fc6``, ``fc7``). With ``levels`` > 1 (PANet), ``fc6`` runs on
    each level's pooled grid and the levels are fused by element-wise max before ``fc7``."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, width)
        self.fc7 = nn.Linear(width, width)

    def forward(self, pooled: torch.Tensor, *, fuse_levels: bool = False) -> torch.Tensor:
        if fuse_levels:  # [L, K, C, s, s]
            x = F.relu(self.fc6(pooled.flatten(2))).amax(0)
        else:
            x = F.relu(self.fc6(pooled.flatten(1)))
        return F.relu(self.fc7(x))


class BoxPredictor(nn.Module):
    """Class logits (background first) and class-specific box deltas."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(width, num_classes)
        self.bbox_pred = nn.Linear(width, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x).reshape(x.shape[0], -1, 4)


class MaskHead(nn.Sequential):
    """The mask FCN: ``convs`` 3x3 conv + ReLU layers (torchvision's keys ``mask_head.I.0``).
    With PANet's adaptive pooling the first conv runs on each level and the levels are fused by
    max (Liu et al., section 3.2)."""

    def __init__(self, cin: int, width: int, convs: int) -> None:
        super().__init__(*(nn.Sequential(nn.Conv2d(cin if i == 0 else width, width, 3, padding=1),
                                         nn.ReLU(inplace=True)) for i in range(convs)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_layers(self, pooled: torch.Tensor, *, fuse_levels: bool = False) -> list[torch.Tensor]:
        """Every layer's output (PANet's fused branch reads the third)."""
        first = self[0]
        if fuse_levels:  # [L, K, C, s, s] -> the first conv per level, max over levels
            L, K = pooled.shape[:2]
            x = first(pooled.flatten(0, 1)).unflatten(0, (L, K)).amax(0)
        else:
            x = first(pooled)
        outs = [x]
        for layer in list(self)[1:]:
            outs.append(layer(outs[-1]))
        return outs


class MaskPredictor(nn.Module):
    """2x2 stride-2 transposed conv + ReLU, then a 1x1 conv giving one mask logit map per class."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(width, num_classes, 1)
        for m in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


class FusedMaskBranch(nn.Module):
    """PANet's fully connected mask branch (Liu et al., section 3.3, Fig. 4): from the mask FCN's
    third layer, two 3x3 convs (the second halving the channels), one FC layer to a class-agnostic
    ``2s x 2s`` map that is added to every class's FCN logits."""

    def __init__(self, width: int, pooled_size: int) -> None:
        super().__init__()
        self.conv4_fc = nn.Conv2d(width, width, 3, padding=1)
        self.conv5_fc = nn.Conv2d(width, width // 2, 3, padding=1)
        self.out_size = 2 * pooled_size
        self.fc = nn.Linear(width // 2 * pooled_size * pooled_size, self.out_size ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv5_fc(F.relu(self.conv4_fc(x))))
        return self.fc(x.flatten(1)).reshape(-1, 1, self.out_size, self.out_size)
