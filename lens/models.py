"""Model construction, input normalisation and checkpoints (torch imported lazily by callers).

The reference recipe is torchvision's ResNet-18, unmodified (so ImageNet weights fit), with
a new ``num_classes`` head. On 32x32 inputs its blocks are 8x8 (layer1), 4x4 (layer2),
2x2 (layer3) and 1x1 (layer4): saliency must not come from layer4.

Checkpoint format (``torch.save`` of a dict): ``state_dict``, ``arch``, ``num_classes``,
``class_names``, ``mean``, ``std`` (per channel, pixel values scaled to [0, 1]),
``image_size``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lens.errors import LensError

ARCH = "resnet18"
#: seconds a download (ImageNet weights, CIFAR-10) may wait on the network in one step (connect,
#: each read) before it fails, so a blocked network gives the offline message instead of a hang
DOWNLOAD_TIMEOUT = float(os.environ.get("LENS_DOWNLOAD_TIMEOUT") or 30)
OFFLINE_WEIGHTS = "Without internet, pass --weights FILE (a local state dict) or train from scratch with --no-pretrained."


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (library errors can run to many lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


@contextmanager
def network_timeout(seconds: float | None = None) -> Iterator[None]:
    """Socket default timeout for the library downloads inside (urllib has none of its own)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT if seconds is None else seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def imagenet_weights_available() -> tuple[bool, str | None]:
    """Whether torchvision's ImageNet ResNet-18 weights can be had: (True, None) or (False, why).

    As torchvision loads them: from the torch hub cache, else downloaded now (its progress
    bar) into it. ``why`` is one line (the network error). ``lens run`` / ``lens demo`` ask
    this when neither ``--pretrained`` nor ``--no-pretrained`` was given.
    """
    try:
        from torchvision.models import ResNet18_Weights

        with network_timeout():
            ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # URLError, timeout, hash mismatch, unreadable cache file
        return False, one_line(exc)
    return True, None


def build_resnet18(num_classes: int, *, pretrained: bool = False, weights: str | os.PathLike | None = None):
    """torchvision ResNet-18 with a fresh ``num_classes`` head.

    ``weights``: a local state-dict file (ImageNet or any ResNet-18; its ``fc`` is dropped).
    ``pretrained``: torchvision's ImageNet weights, as torchvision loads them (its cache, else
    downloaded with its progress bar; a network step waits at most ``DOWNLOAD_TIMEOUT``
    seconds); a failure is a one-line LensError that says to pass ``--weights FILE`` or
    ``--no-pretrained``.
    """
    import torch
    from torch import nn
    from torchvision.models import ResNet18_Weights, resnet18

    model = resnet18(weights=None)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise LensError(f"Weights file {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LensError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.startswith("fc.")]
        if missing or unexpected:
            raise LensError(f"{path}: not a ResNet-18 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    elif pretrained:
        try:
            with network_timeout():  # torchvision's download (progress bar) or its cache
                model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        except Exception as exc:
            raise LensError(
                f"Cannot load ImageNet-pretrained ResNet-18 weights ({one_line(exc)}). {OFFLINE_WEIGHTS}"
            ) from exc
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]):
    """uint8 images (N, H, W, 3) -> float tensor (N, 3, H, W), scaled to [0, 1] and standardised."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W, 3), on the [0, 1] scale."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return x.mean(axis=0).tolist(), x.std(axis=0).tolist()


def penultimate(model, x):
    """The 512-d features before the head (global-average-pooled layer4)."""
    import torch

    m = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def save_checkpoint(path: str | os.PathLike, model, *, class_names: Sequence[str], mean, std, image_size: int) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "state_dict": model.state_dict(),
            "arch": ARCH,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "mean": list(mean),
            "std": list(std),
            "image_size": int(image_size),
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint
    return path


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint`: (model in eval mode, metadata)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise LensError(f"Checkpoint {path} not found (was the run trained on another machine?)")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if ckpt.get("arch") != ARCH:
        raise LensError(f"{path}: unsupported architecture {ckpt.get('arch')!r}")
    model = build_resnet18(ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


def resolve_device(device: str = "auto") -> str:
    """'auto' -> cuda, then mps, then cpu; an explicit device that is absent is a LensError."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LensError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LensError("--device mps: no Apple MPS device is available here; use --device cpu or auto")
    return device
