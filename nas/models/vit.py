"""Vision Transformers pretrained as masked autoencoders (He et al., 2022) via ``ViTMAEForPreTraining``."""

from __future__ import annotations

from nas.models.base import ArchKey, ModelFamily, ParamCount, register_family
from nas.models.transformer import ENCODER_KEYS, bert_layer_params, encoder_layer_flops, intermediate_size


@register_family
class ViTFamily(ModelFamily):
    name = "vit"
    tasks = ("mae",)
    arch_keys = {
        "patch_size": ArchKey(int, 4, minimum=1),
        **ENCODER_KEYS,
        "decoder_hidden_size": ArchKey(int, 64, minimum=8),
        "decoder_num_layers": ArchKey(int, 1, minimum=1),
        "decoder_num_heads": ArchKey(int, 4, minimum=1),
        "decoder_ffn_ratio": ArchKey(float, 4.0, minimum=0.25),
        "mask_ratio": ArchKey(float, 0.75, minimum=0.0),
        "norm_pix_loss": ArchKey(bool, False),
    }
    # The share of patches masked and the pixel normalisation define the loss: 0.5 is an easier task than 0.75.
    loss_defining_keys = ("mask_ratio", "norm_pix_loss")
    tiny = {
        "num_layers": 2,
        "hidden_size": 32,
        "num_heads": 4,
        "ffn_ratio": 2,
        "patch_size": 4,
        "decoder_hidden_size": 32,
        "decoder_num_heads": 4,
    }

    def check(self, arch, data):
        problems = []
        if arch["hidden_size"] % arch["num_heads"]:
            problems.append(
                ("num_heads", f"num_heads {arch['num_heads']} does not divide hidden_size {arch['hidden_size']}")
            )
        if arch["decoder_hidden_size"] % arch["decoder_num_heads"]:
            problems.append(
                (
                    "decoder_num_heads",
                    f"decoder_num_heads {arch['decoder_num_heads']} does not divide "
                    f"decoder_hidden_size {arch['decoder_hidden_size']}",
                )
            )
        if data.image_size % arch["patch_size"]:
            problems.append(
                ("patch_size", f"patch_size {arch['patch_size']} does not divide image_size {data.image_size}")
            )
        if not 0.0 < arch["mask_ratio"] < 1.0:
            problems.append(("mask_ratio", f"mask_ratio {arch['mask_ratio']} must lie strictly between 0 and 1"))
        return problems

    def count_params(self, arch, data):
        hidden, dec = arch["hidden_size"], arch["decoder_hidden_size"]
        patch_pixels = arch["patch_size"] ** 2 * data.channels
        positions = (data.image_size // arch["patch_size"]) ** 2 + 1
        inter = intermediate_size(arch)
        dec_inter = intermediate_size(arch, "decoder_")
        embedding = hidden + positions * hidden + patch_pixels * hidden + hidden + dec + positions * dec
        encoder = arch["num_layers"] * bert_layer_params(hidden, inter) + 2 * hidden
        decoder = (hidden * dec + dec) + arch["decoder_num_layers"] * bert_layer_params(dec, dec_inter) + 2 * dec
        prediction = dec * patch_pixels + patch_pixels
        non_embedding = encoder + decoder + prediction
        return ParamCount(embedding + non_embedding, non_embedding)

    def count_flops(self, arch, data):
        """The encoder sees the [CLS] token and the unmasked patches, the decoder all of them (as
        ``ViTMAEForPreTraining`` keeps ``int(patches x (1 - mask_ratio))``)."""
        hidden, dec = arch["hidden_size"], arch["decoder_hidden_size"]
        patch_pixels = arch["patch_size"] ** 2 * data.channels
        patches = (data.image_size // arch["patch_size"]) ** 2
        seen = int(patches * (1 - arch["mask_ratio"])) + 1
        embed = 2 * patches * patch_pixels * hidden
        encoder = arch["num_layers"] * encoder_layer_flops(seen, hidden, intermediate_size(arch))
        decoder = arch["decoder_num_layers"] * encoder_layer_flops(
            patches + 1, dec, intermediate_size(arch, "decoder_")
        )
        return embed + encoder + 2 * seen * hidden * dec + decoder + 2 * (patches + 1) * dec * patch_pixels

    def hf_config(self, arch, data):
        from transformers import ViTMAEConfig

        return ViTMAEConfig(
            image_size=data.image_size,
            patch_size=arch["patch_size"],
            num_channels=data.channels,
            hidden_size=arch["hidden_size"],
            num_hidden_layers=arch["num_layers"],
            num_attention_heads=arch["num_heads"],
            intermediate_size=intermediate_size(arch),
            hidden_act=arch["activation"],
            decoder_hidden_size=arch["decoder_hidden_size"],
            decoder_num_hidden_layers=arch["decoder_num_layers"],
            decoder_num_attention_heads=arch["decoder_num_heads"],
            decoder_intermediate_size=intermediate_size(arch, "decoder_"),
            mask_ratio=arch["mask_ratio"],
            norm_pix_loss=arch["norm_pix_loss"],
        )

    def build(self, arch, data):
        from transformers import ViTMAEForPreTraining

        return with_position_tables(ViTMAEForPreTraining(self.hf_config(arch, data)))

    def load_pretrained(self, folder, arch):
        from transformers import ViTMAEForPreTraining

        return ViTMAEForPreTraining.from_pretrained(folder)

    def describe(self, arch):
        return (
            f"ViT p{arch['patch_size']} L{arch['num_layers']} H{arch['hidden_size']} A{arch['num_heads']} "
            f"ffn x{arch['ffn_ratio']:g} dec L{arch['decoder_num_layers']} H{arch['decoder_hidden_size']}"
        )


def with_position_tables(model):
    """Fill ViT-MAE's fixed 2-D sin-cos position tables where transformers left them at zero.

    In transformers 5.x a freshly built ``ViTMAEForPreTraining`` keeps both tables (encoder and decoder) at zero:
    ``ViTMAEEmbeddings.initialize_weights`` returns early once the patch projection is marked initialised, which
    it already is. Without positions the decoder cannot tell patches apart and MAE learns only the global mean
    pixel (a val loss equal to the pixel variance, for every architecture alike). Tables that are set are left
    as they are, so a fixed transformers release is unaffected.
    """
    embeddings, decoder = model.vit.embeddings, model.decoder
    if not embeddings.position_embeddings.detach().abs().sum():
        embeddings.patch_embeddings.projection._is_hf_initialized = False
        embeddings.initialize_weights()
    if not decoder.decoder_pos_embed.detach().abs().sum():
        decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
    return model
