"""RetinaFace-MobileNet0.25 in PyTorch, with its weights read from the product's ONNX file.

The layout is biubug6/Pytorch_Retinaface's (MobileNetV1 x0.25 backbone, a three-level FPN,
one SSH context module per level, 1x1 class/box/landmark heads with two anchors per cell),
checked node by node against ``models/detectors/retinaface_mnet025.onnx``:

- every conv is followed by LeakyReLU(0.1) except the SSH branches' last convs, whose
  concatenation goes through a plain ReLU;
- the FPN upsamples with nearest neighbour to the finer map's size, adds, then a 3x3 merge;
- heads: loc (N, A, 4), conf (N, A, 2) logits (the ONNX file applies softmax),
  landmarks (N, A, 10); anchors are ordered level, row, column, anchor.

BatchNorm: the ONNX file has it folded into each conv's weight and bias. We keep it folded
(plain conv + bias) instead of re-introducing BN layers: the fine-tuning batches are small
(8 crops on a CPU), so BN in train mode would swap the learned statistics for noisy batch
ones and change the network's outputs from the first step. Each ``Sequential`` keeps an
``Identity`` where BN stood, so module names are the original's (``fx.stage1.0.0`` is the
first conv), which is what ``load_from_onnx`` maps ONNX nodes by.
"""
import re

import torch
import torch.nn.functional as F
from torch import nn

ARCH = "retinaface-mobilenet0.25"
LEAKY = 0.1
NUM_ANCHORS = 2  # per feature-map cell (two sizes per level)
FPN_CHANNELS = 64


def conv_bn(inp, oup, stride=1, kernel=3, leaky=LEAKY):
    """Conv (+ folded BN) + LeakyReLU; ``leaky=None`` for no activation."""
    layers = [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=True), nn.Identity()]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def conv_dw(inp, oup, stride):
    """Depthwise 3x3 then pointwise 1x1, each with folded BN and LeakyReLU (MobileNetV1)."""
    depthwise = nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=True),
                              nn.Identity(), nn.LeakyReLU(LEAKY, inplace=True))
    return nn.Sequential(depthwise, conv_bn(inp, oup, kernel=1))


class MobileNetV1(nn.Module):
    """MobileNetV1 x0.25 trunk; returns the stride 8, 16 and 32 feature maps (64/128/256 ch)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                                    conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x):
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return c3, c4, self.stage3(c4)


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling and 3x3 merges (no merge on the top level)."""

    def __init__(self, in_channels=(64, 128, 256), out=FPN_CHANNELS):
        super().__init__()
        self.output1 = conv_bn(in_channels[0], out, kernel=1)
        self.output2 = conv_bn(in_channels[1], out, kernel=1)
        self.output3 = conv_bn(in_channels[2], out, kernel=1)
        self.merge1 = conv_bn(out, out)
        self.merge2 = conv_bn(out, out)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return o1, o2, o3


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields concatenated."""

    def __init__(self, inp=FPN_CHANNELS, out=FPN_CHANNELS):
        super().__init__()
        self.conv3X3 = conv_bn(inp, out // 2, leaky=None)
        self.conv5X5_1 = conv_bn(inp, out // 4)
        self.conv5X5_2 = conv_bn(out // 4, out // 4, leaky=None)
        self.conv7X7_2 = conv_bn(out // 4, out // 4)
        self.conv7x7_3 = conv_bn(out // 4, out // 4, leaky=None)

    def forward(self, x):
        branch5 = self.conv5X5_1(x)  # shared by the 5x5 and 7x7 branches
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class Head(nn.Module):
    """One 1x1 conv per level, outputs flattened to (N, cells x anchors, ``per_anchor``)."""

    def __init__(self, attr, per_anchor, levels=3):
        super().__init__()
        self.per_anchor = per_anchor
        self.attr = attr
        setattr(self, attr, nn.ModuleList(
            [nn.Conv2d(FPN_CHANNELS, NUM_ANCHORS * per_anchor, 1) for _ in range(levels)]))

    def forward(self, feats):
        convs = getattr(self, self.attr)
        outs = [conv(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, self.per_anchor)
                for conv, f in zip(convs, feats)]
        return torch.cat(outs, dim=1)


class RetinaFace(nn.Module):
    """The detector: ``forward(x)`` -> (loc, conf logits, landmarks); x is NCHW BGR minus mean."""

    def __init__(self):
        super().__init__()
        self.fx = MobileNetV1()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.class_head = Head("class_head", 2)
        self.bbox_head = Head("bbox_head", 4)
        self.landmark_head = Head("landmark_head", 10)

    def forward(self, x):
        p3, p4, p5 = self.fpn(self.fx(x))
        feats = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        return self.bbox_head(feats), self.class_head(feats), self.landmark_head(feats)


class WithSoftmax(nn.Module):
    """The deployed form: (loc, softmax(conf), landmarks), as the original ONNX file outputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        loc, conf, landmarks = self.net(x)
        return loc, F.softmax(conf, dim=-1), landmarks


def _module_path(output_name):
    """ONNX scope of a conv's output -> our module path ('/fx/stage1/stage1.0/stage1.0.0/Conv_output_0'
    -> 'fx.stage1.0.0'): the top module, then the innermost scope, which already holds the
    path inside that module. Our own exports wrap the network in ``WithSoftmax``, whose
    ``net`` scope comes first ('/net/fx/...'), so a fine-tuned detector loads like the original."""
    scopes = [s for s in output_name.split("/") if s][:-1]
    if scopes[0] == "net" and len(scopes) > 2:
        scopes = scopes[1:]
    return scopes[0] + "." + scopes[-1]


def load_from_onnx(path):
    """A ``RetinaFace`` whose weights are the ONNX file's initializers, checked to fit exactly:
    the original WIDER FACE file or one exported by ``train.detector.export`` (the shipped
    ``models/face_detector.onnx``, to fine-tune it further on a site's own scenes).

    Every conv node is mapped to our module of the same name; a node that re-runs a module
    (the traced SSH calls ``conv5X5_1`` twice, exported as ``conv5X5_1.0_1`` with
    Identity-copied weights) must carry the same weights. Kernel, stride, padding, groups and
    shapes are compared, and every conv of ours must be loaded once: a wrong layout fails
    here, not as a silent accuracy loss.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}

    def tensor(name):
        while name not in inits and name in alias:
            name = alias[name]
        return torch.from_numpy(inits[name].copy())

    net = RetinaFace()
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    loaded = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        name = _module_path(node.output[0])
        weight, bias = tensor(node.input[1]), tensor(node.input[2])
        repeat = re.match(r"(.+)_\d+$", name)
        if name not in convs and repeat and repeat.group(1) in loaded:
            first = loaded[repeat.group(1)]
            if not (torch.equal(first.weight, weight) and torch.equal(first.bias, bias)):
                raise ValueError("%s: node %s re-runs %s with other weights" % (path, name, repeat.group(1)))
            continue
        if name not in convs or name in loaded:
            raise ValueError("%s: conv node %s has no (unloaded) module in RetinaFace" % (path, name))
        conv = convs[name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        expect = {"strides": list(conv.stride), "pads": list(conv.padding) * 2,
                  "group": conv.groups, "kernel_shape": list(conv.kernel_size)}
        for key, value in expect.items():
            if attrs.get(key, 1 if key == "group" else None) != value:
                raise ValueError("%s: %s has %s=%s, RetinaFace expects %s"
                                 % (path, name, key, attrs.get(key), value))
        if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
            raise ValueError("%s: %s weight %s, RetinaFace expects %s"
                             % (path, name, tuple(weight.shape), tuple(conv.weight.shape)))
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        loaded[name] = conv
    missing = sorted(set(convs) - set(loaded))
    if missing:
        raise ValueError("%s: no weights for %s" % (path, ", ".join(missing)))
    return net.eval()


def freeze_for_finetuning(net):
    """Freeze what fine-tuning must not move; returns ``net``.

    - the landmark head: there are no landmark labels, so it keeps the original weights
      for later use (its inputs still shift as the shared layers train: ``engine.landmark_drift``
      measures by how much);
    - the first conv: with BN folded and the input in pixel units its weights have an RMS of
      0.001, 30-1000x smaller than any other tensor, and AdamW's first steps move every weight
      by about the learning rate, which rewrites it (one step at 1e-3 took val AP from 0.89
      to 0.0004). Its 216 weights are generic edge filters; they lose nothing by staying.
    """
    for p in list(net.landmark_head.parameters()) + list(net.fx.stage1[0][0].parameters()):
        p.requires_grad_(False)
    return net
