"""Loading weight files made elsewhere: torchvision segmentation models and ImageNet backbones.

Whole-model files (torchvision's ``fcn_resnet50`` etc., or a segexport ``checkpoint.safetensors``)
become a model with :func:`model_from_weights_file`; ImageNet classification files (torchvision's
``resnet50``, ``resnet101``, ``vgg16``, ``vgg16_bn``, ``mobilenet_v2``) initialise a model's
backbone with :func:`load_backbone_weights`. Files are read by
:func:`segexport.checkpoint.read_state_dict` (never unpickling code) and loaded strictly.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from segexport.checkpoint import fit_state_dict, read_state_dict
from segexport.models import SegmentationModel, build_model, get_entry
from segexport.models.foreign import ForeignModel, unwrap_state_dict
from segexport.nn.vgg import vgg_fc_to_conv

# Keys of ImageNet classifiers that a backbone does not have (ResNet's fc, VGG's and
# MobileNetV2's classifier).
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
AUX_PREFIX = "aux_classifier."
_NUM_BATCHES = "num_batches_tracked"
_FOREIGN_HINT = "check --model, --model-kwargs and that the file holds this network's state_dict()"


def _with_batch_counters(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` plus the model's own BN ``num_batches_tracked`` where the file has running
    stats but no counter: files saved before PyTorch 0.4.1 (some torchvision ImageNet weights)
    lack it, and PyTorch itself fills it in; it has no effect on the outputs."""
    filled = dict(state)
    for key, value in own.items():
        stem = key[: -len(_NUM_BATCHES)]
        if key.endswith(_NUM_BATCHES) and key not in state and f"{stem}running_mean" in state:
            filled[key] = value.clone()
    return filled


INSTANCE_CLASSIFIER = "roi_heads.box_predictor.cls_score.weight"  # Mask R-CNN's (torchvision's key)


def _last_classifier_weight(model: nn.Module) -> str | None:
    """Key of the classifier's last weight: its first dimension is the number of classes."""
    own = model.state_dict()
    keys = [k for k in own if k.startswith("classifier.") and k.endswith(".weight")]
    return keys[-1] if keys else (INSTANCE_CLASSIFIER if INSTANCE_CLASSIFIER in own else None)


def model_from_weights_file(
    arch: str,
    path: str | Path,
    *,
    size: str = "paper",
    num_classes: int | None = None,
    backbone: str | None = None,
) -> SegmentationModel:
    """Build ``arch`` and load a whole-model state-dict file into it (eval mode).

    Args:
        arch: a registered architecture (e.g. ``"deeplabv3_resnet50"``).
        path: a torchvision ``.pth``/``.pt`` state dict or a ``.safetensors`` file.
        size: the architecture's size; torchvision files are ``"paper"``.
        num_classes: output classes; ``None`` reads them from the classifier's last weight.
        backbone: the backbone, for architectures that take one.

    Returns:
        The model with the file's weights. The training-only heads the architecture can build
        (``aux``, ``se_loss``) are built exactly when the file has their keys.

    Raises:
        InputError: the file is missing.
        CheckpointError: a corrupt file, or weights that do not fit (missing, unexpected or
            misshapen keys, summarised).
    """
    state = read_state_dict(path)
    args: dict[str, object] = {"size": size, "backbone": backbone, **training_heads(arch, state)}
    if num_classes is None:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            probe = build_model(arch, **args)
        key = _last_classifier_weight(probe)
        if key is not None and key in state and state[key].dim() > 0:
            num_classes = int(state[key].shape[0])
    model = build_model(arch, **args, num_classes=num_classes)
    described = ", ".join(f"{k}={v}" for k, v in {**args, "num_classes": num_classes}.items() if v is not None)
    fit_state_dict(model, _with_batch_counters(model.state_dict(), state), f"{arch} ({described})")
    return model.eval()


# Training-only heads a builder may leave out: its argument -> the prefix of the head's keys.
TRAINING_HEADS = {"aux": AUX_PREFIX, "se_loss": "classifier.se."}


def training_heads(arch: str, keys: Iterable[str]) -> dict[str, bool]:
    """For each training-only head ``arch``'s builder takes, whether the state dict's ``keys``
    hold it (so a file without the head loads into a model without it)."""
    params = inspect.signature(get_entry(arch).builder).parameters
    keys = list(keys)
    return {arg: any(k.startswith(prefix) for k in keys) for arg, prefix in TRAINING_HEADS.items() if arg in params}


def _fc_conv_targets(model: SegmentationModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VGG's fc6/fc7 as convs, keyed by the model's names, when its classifier has FCN-style
    ``fc6``/``fc7`` convs of torchvision VGG-16's shapes; otherwise empty."""
    head = model.classifier
    fc6, fc7 = getattr(head, "fc6", None), getattr(head, "fc7", None)
    if not (isinstance(fc6, nn.Conv2d) and isinstance(fc7, nn.Conv2d)) or "classifier.0.weight" not in state:
        return {}
    if tuple(fc6.weight.shape) != (4096, 512, 7, 7) or tuple(fc7.weight.shape) != (4096, 4096, 1, 1):
        return {}
    return {f"classifier.{k}": v for k, v in vgg_fc_to_conv(state).items()}


def load_backbone_weights(model: SegmentationModel, path: str | Path) -> list[str]:
    """Load an ImageNet classification checkpoint into ``model.backbone`` (in place).

    The classifier keys backbones do not have (``fc.*``, ``classifier.*``) are dropped, except
    that torchvision VGG-16's fc6/fc7 become the model's ``classifier.fc6``/``classifier.fc7``
    convs where it has them in VGG-16's shapes (the paper FCNs). Everything else must fit the
    backbone exactly.

    Args:
        model: the model whose backbone (and FCN fc6/fc7) to initialise.
        path: torchvision ``resnet50``/``resnet101``/``vgg16``/``vgg16_bn``/``mobilenet_v2``
            weights (``.pth``/``.pt``) or a ``.safetensors`` file with the same keys.

    Returns:
        The model's state-dict keys that were loaded from the file, in order.

    Raises:
        InputError: the file is missing.
        CheckpointError: a corrupt file, or keys that do not fit the backbone (summarised).
    """
    state = read_state_dict(path)
    fc = _fc_conv_targets(model, state)  # before loading anything: it may raise
    body = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    own = model.backbone.state_dict()
    name = type(model.backbone).__name__
    what = f"the {name} backbone of this model (file {Path(path).name})"
    fit_state_dict(model.backbone, _with_batch_counters(own, body), what)
    loaded = [f"backbone.{k}" for k in body]
    with torch.no_grad():
        for key, tensor in fc.items():  # shapes checked by _fc_conv_targets
            model.get_parameter(key).copy_(tensor)
    return loaded + list(fc)


def load_foreign_weights(model: ForeignModel, path: str | Path) -> None:
    """Load a user's state-dict file into the network ``model`` wraps (strictly, in place).

    The file may be the network's own ``state_dict()`` (``.pth``/``.pt``/``.safetensors``,
    ``module.`` prefixes of DataParallel/DistributedDataParallel removed) or a segexport
    ``checkpoint.safetensors`` of the same network (keys under ``net.``).

    Raises:
        InputError: the file is missing.
        CheckpointError: a corrupt file, or keys or shapes that do not fit (named).
    """
    state = unwrap_state_dict(read_state_dict(path))
    what = f"{model.spec or 'the model'} (file {Path(path).name})"
    if state and all(k.startswith("net.") for k in state) \
            and not all(k.startswith("net.") for k in model.net.state_dict()):
        fit_state_dict(model, state, what, _FOREIGN_HINT)
    else:
        fit_state_dict(model.net, _with_batch_counters(model.net.state_dict(), state), what, _FOREIGN_HINT)
    model.eval()
