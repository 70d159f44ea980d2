"""Convolutional backbones (transformers ``ResNetModel`` or ``ConvNextModel``) with a contrastive projection head.

The backbone is a plain transformers model, so it is what gets exported; the projection head (and SimSiam's
predictor) only exists for self-supervised pretraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.models.base import ArchKey, ModelFamily, ParamCount, register_family

HEAD_FILE = "nas_projection_head.safetensors"


def stage_widths(arch: dict[str, Any]) -> list[int]:
    return [arch["base_width"] * 2**i for i in range(arch["num_stages"])]


def _resnet_layer(in_ch: int, out_ch: int, stride: int, bottleneck: bool) -> int:
    shortcut = in_ch * out_ch + 2 * out_ch if (in_ch != out_ch or stride != 1) else 0
    if bottleneck:
        reduced = out_ch // 4
        body = in_ch * reduced + 2 * reduced + 9 * reduced * reduced + 2 * reduced + reduced * out_ch + 2 * out_ch
    else:
        body = 9 * in_ch * out_ch + 2 * out_ch + 9 * out_ch * out_ch + 2 * out_ch
    return shortcut + body


def _resnet_params(arch: dict[str, Any], channels: int) -> tuple[int, int]:
    """(stem, body) parameter counts of transformers' ResNetModel (BatchNorm affine params included)."""
    stem_width = arch["base_width"]
    stem = 49 * channels * stem_width + 2 * stem_width
    body, in_ch = 0, stem_width
    bottleneck = arch["layer_type"] == "bottleneck"
    for index, width in enumerate(stage_widths(arch)):
        stride = 1 if index == 0 else 2
        body += _resnet_layer(in_ch, width, stride, bottleneck)
        body += (arch["depth"] - 1) * _resnet_layer(width, width, 1, bottleneck)
        in_ch = width
    return stem, body


def _convnext_params(arch: dict[str, Any], channels: int) -> tuple[int, int]:
    """(stem, body) parameter counts of transformers' ConvNextModel (layer scale on, final LayerNorm)."""
    widths = stage_widths(arch)
    patch = arch["patch_size"]
    stem = channels * widths[0] * patch * patch + widths[0] + 2 * widths[0]
    body = 0
    for index, width in enumerate(widths):
        if index:
            body += 2 * widths[index - 1] + widths[index - 1] * width * 4 + width
        body += arch["depth"] * (8 * width * width + 58 * width)
    return stem, body + 2 * widths[-1]


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, size: int, groups: int = 1):
    """(forward FLOPs, output size) of one square convolution on a ``size`` x ``size`` input."""
    out = (size + 2 * padding - kernel) // stride + 1
    return 2 * out_ch * (in_ch // groups) * kernel * kernel * out * out, out


def _resnet_flops(arch: dict[str, Any], channels: int, size: int) -> int:
    """transformers' ResNetModel: a 7x7/2 stem and a 3x3/2 max-pool, then stages whose first layer strides
    (bottleneck layers stride at their 3x3 convolution)."""
    flops, size = _conv(channels, arch["base_width"], 7, 2, 3, size)
    size = (size + 2 - 3) // 2 + 1  # the max-pool
    in_ch, bottleneck = arch["base_width"], arch["layer_type"] == "bottleneck"
    for index, width in enumerate(stage_widths(arch)):
        for layer in range(arch["depth"]):
            stride = 2 if index and not layer else 1
            if in_ch != width or stride != 1:
                flops += _conv(in_ch, width, 1, stride, 0, size)[0]  # the projection shortcut
            if bottleneck:
                reduced = width // 4
                first, _ = _conv(in_ch, reduced, 1, 1, 0, size)
                middle, size = _conv(reduced, reduced, 3, stride, 1, size)
                flops += first + middle + _conv(reduced, width, 1, 1, 0, size)[0]
            else:
                first, size = _conv(in_ch, width, 3, stride, 1, size)
                flops += first + _conv(width, width, 3, 1, 1, size)[0]
            in_ch = width
    return flops


def _convnext_flops(arch: dict[str, Any], channels: int, size: int) -> int:
    """transformers' ConvNextModel: a patchify stem, a 2x2/2 downsampling convolution before every stage but
    the first, and per layer a 7x7 depthwise convolution and a 4x wide MLP."""
    widths = stage_widths(arch)
    flops, size = _conv(channels, widths[0], arch["patch_size"], arch["patch_size"], 0, size)
    for index, width in enumerate(widths):
        if index:
            downsample, size = _conv(widths[index - 1], width, 2, 2, 0, size)
            flops += downsample
        layer = _conv(width, width, 7, 1, 3, size, groups=width)[0] + 2 * size * size * 8 * width * width
        flops += arch["depth"] * layer
    return flops


def head_params(arch: dict[str, Any]) -> int:
    """Projection MLP (Linear-BN-ReLU-Linear) plus, for SimSiam, the bottleneck predictor."""
    features, dim = stage_widths(arch)[-1], arch["projection_dim"]
    projector = features * dim + dim + 2 * dim + dim * dim + dim
    if arch["method"] == "simsiam":
        hidden = max(dim // 4, 1)
        projector += dim * hidden + hidden + 2 * hidden + hidden * dim + dim
    return projector


@register_family
class CNNFamily(ModelFamily):
    name = "cnn"
    tasks = ("contrastive",)
    arch_keys = {
        "backbone": ArchKey(str, "resnet", allowed=("resnet", "convnext")),
        "num_stages": ArchKey(int, minimum=1),
        "base_width": ArchKey(int, minimum=4),
        "depth": ArchKey(int, minimum=1),
        "layer_type": ArchKey(str, "basic", allowed=("basic", "bottleneck")),  # ResNet only
        "patch_size": ArchKey(int, 2, minimum=1),  # ConvNeXt stem only
        "activation": ArchKey(str, "relu", allowed=("relu", "gelu", "silu")),
        "projection_dim": ArchKey(int, 64, minimum=2),
        "method": ArchKey(str, "simclr", allowed=("simclr", "simsiam")),
    }
    loss_defining_keys = ("method",)  # NT-Xent and SimSiam's cosine are different scales
    tiny = {"num_stages": 2, "base_width": 8, "depth": 1, "projection_dim": 16}

    def check(self, arch, data):
        problems = []
        if arch["backbone"] == "resnet" and arch["layer_type"] == "bottleneck" and arch["base_width"] % 4:
            problems.append(
                ("base_width", f"base_width {arch['base_width']} must be a multiple of 4 for bottleneck layers")
            )
        if (
            arch["backbone"] == "convnext"
            and data.image_size
            and data.image_size < arch["patch_size"] * 2 ** (arch["num_stages"] - 1)
        ):
            problems.append(
                (
                    "num_stages",
                    f"image_size {data.image_size} is too small for {arch['num_stages']} ConvNeXt stages "
                    f"after a patch-{arch['patch_size']} stem",
                )
            )
        return problems

    def count_params(self, arch, data):
        counter = _convnext_params if arch["backbone"] == "convnext" else _resnet_params
        stem, body = counter(arch, data.channels)
        head = head_params(arch)
        return ParamCount(stem + body + head, body + head)

    def count_flops(self, arch, data):
        counter = _convnext_flops if arch["backbone"] == "convnext" else _resnet_flops
        features, dim = stage_widths(arch)[-1], arch["projection_dim"]
        head = 2 * (features * dim + dim * dim)
        if arch["method"] == "simsiam":
            head += 4 * dim * max(dim // 4, 1)
        return counter(arch, data.channels, data.image_size) + head

    def hf_config(self, arch, data):
        widths, depths = stage_widths(arch), [arch["depth"]] * arch["num_stages"]
        if arch["backbone"] == "convnext":
            from transformers import ConvNextConfig

            return ConvNextConfig(
                num_channels=data.channels,
                hidden_sizes=widths,
                depths=depths,
                patch_size=arch["patch_size"],
                num_stages=arch["num_stages"],
                hidden_act=arch["activation"],
                image_size=data.image_size,
            )
        from transformers import ResNetConfig

        return ResNetConfig(
            num_channels=data.channels,
            embedding_size=arch["base_width"],
            hidden_sizes=widths,
            depths=depths,
            layer_type=arch["layer_type"],
            hidden_act=arch["activation"],
        )

    def build(self, arch, data):
        from transformers import ConvNextModel, ResNetModel

        from nas.models.heads import ContrastiveModel

        config = self.hf_config(arch, data)
        backbone = ConvNextModel(config) if arch["backbone"] == "convnext" else ResNetModel(config)
        return ContrastiveModel(backbone, stage_widths(arch)[-1], arch["projection_dim"], arch["method"])

    # The projection head: transformers saves the backbone (ResNetModel / ConvNextModel), not our head around it.
    extra_files = (HEAD_FILE,)

    def save_pretrained(self, model, folder):
        from safetensors.torch import save_file

        model.backbone.save_pretrained(folder)
        head = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        save_file(head, str(Path(folder) / HEAD_FILE))

    def load_pretrained(self, folder, arch):
        from safetensors.torch import load_file
        from transformers import AutoModel

        from nas.models.heads import ContrastiveModel

        backbone = AutoModel.from_pretrained(folder)
        model = ContrastiveModel(backbone, backbone.config.hidden_sizes[-1], arch["projection_dim"], arch["method"])
        head = load_file(str(Path(folder) / HEAD_FILE))
        model.load_state_dict({**{f"backbone.{k}": v for k, v in backbone.state_dict().items()}, **head})
        return model

    def width(self, arch):
        return int(arch["base_width"])

    def describe(self, arch):
        extra = arch["layer_type"] if arch["backbone"] == "resnet" else f"patch{arch['patch_size']}"
        return (
            f"{arch['backbone']} {extra} stages={arch['num_stages']} width={arch['base_width']} "
            f"depth={arch['depth']} {arch['method']} proj={arch['projection_dim']}"
        )
