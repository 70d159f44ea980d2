"""Text encoders for masked language modelling: BERT blocks, or ModernBERT blocks as a conditional choice."""

from __future__ import annotations

from typing import Any

from nas.models.base import ArchKey, ModelFamily, ParamCount, register_family

# Special token ids shared by the tokenizer (nas.data.tokenizer) and every text model config.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4


def intermediate_size(arch: dict[str, Any], prefix: str = "") -> int:
    """The feed-forward width: ``hidden_size x ffn_ratio`` (``decoder_hidden_size x decoder_ffn_ratio`` with the
    ``decoder_`` prefix)."""
    return int(round(arch[f"{prefix}hidden_size"] * arch[f"{prefix}ffn_ratio"]))


def bert_layer_params(hidden: int, intermediate: int) -> int:
    """One post-LN BERT/ViT encoder layer: Q, K, V, output projections, two LayerNorms and the MLP."""
    return (
        4 * (hidden * hidden + hidden)
        + (hidden * intermediate + intermediate)
        + (intermediate * hidden + hidden)
        + 4 * hidden
    )


def encoder_layer_flops(tokens: int, hidden: int, intermediate: int, mlp_in: int | None = None) -> int:
    """Forward FLOPs (2 per multiply-add) of one encoder layer on ``tokens`` tokens: Q, K, V and output
    projections, the two attention products, and the MLP (``mlp_in`` is its input projection's width, 2x the
    intermediate size for a GLU)."""
    projections = 4 * hidden * hidden + hidden * (mlp_in or intermediate) + intermediate * hidden
    return 2 * tokens * projections + 4 * tokens * tokens * hidden


# The encoder shape shared by text and vision Transformers.
ENCODER_KEYS = {
    "num_layers": ArchKey(int, minimum=1),
    "hidden_size": ArchKey(int, minimum=8),
    "num_heads": ArchKey(int, minimum=1),
    "ffn_ratio": ArchKey(float, 4.0, minimum=0.25),
    "activation": ArchKey(str, "gelu", allowed=("gelu", "silu", "relu", "gelu_new")),
}


@register_family
class TransformerFamily(ModelFamily):
    name = "transformer"
    tasks = ("mlm",)
    arch_keys = {
        "block": ArchKey(str, "bert", allowed=("bert", "modernbert")),
        **ENCODER_KEYS,
        "dropout": ArchKey(float, 0.0, minimum=0.0),
        # ModernBERT only: alternating local (sliding window) and global attention.
        "global_attn_every_n_layers": ArchKey(int, 3, minimum=1),
        "local_attention": ArchKey(int, 64, minimum=2),
    }
    tiny = {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "ffn_ratio": 2}

    def check(self, arch, data):
        problems = []
        if arch["hidden_size"] % arch["num_heads"]:
            problems.append(
                ("num_heads", f"num_heads {arch['num_heads']} does not divide hidden_size {arch['hidden_size']}")
            )
        if arch["block"] == "modernbert" and arch["local_attention"] % 2:
            problems.append(
                ("local_attention", f"local_attention {arch['local_attention']} must be even for ModernBERT")
            )
        return problems

    def count_params(self, arch, data):
        hidden, layers, inter, vocab = arch["hidden_size"], arch["num_layers"], intermediate_size(arch), data.vocab_size
        if arch["block"] == "modernbert":
            # No biases, bias-free LayerNorms, GLU MLP (Wi is 2x wide), rotary positions (no table).
            attention = 4 * hidden * hidden  # Wqkv + Wo
            mlp = hidden * 2 * inter + inter * hidden
            norms = 2 * hidden * layers - hidden  # attn_norm + mlp_norm per layer; layer 0 has no attn_norm
            embeddings = vocab * hidden + hidden  # token table + its norm
            head = hidden * hidden + hidden + vocab  # dense + norm + decoder bias (decoder weight is tied)
            total = embeddings + layers * (attention + mlp) + norms + hidden + head  # + final_norm
            return ParamCount(total, total - vocab * hidden)
        embeddings = vocab * hidden + data.seq_len * hidden + 2 * hidden
        total = (
            embeddings + 2 * hidden + layers * bert_layer_params(hidden, inter) + (hidden * hidden + 3 * hidden + vocab)
        )
        return ParamCount(total, total - embeddings)

    def count_flops(self, arch, data):
        hidden, inter, tokens = arch["hidden_size"], intermediate_size(arch), data.seq_len
        glu = 2 * inter if arch["block"] == "modernbert" else None
        layers = arch["num_layers"] * encoder_layer_flops(tokens, hidden, inter, glu)
        head = 2 * tokens * (hidden * hidden + hidden * data.vocab_size)  # dense + vocabulary projection
        return layers + head

    def hf_config(self, arch, data):
        common = dict(
            vocab_size=data.vocab_size,
            hidden_size=arch["hidden_size"],
            num_hidden_layers=arch["num_layers"],
            num_attention_heads=arch["num_heads"],
            intermediate_size=intermediate_size(arch),
            max_position_embeddings=data.seq_len,
            pad_token_id=PAD_ID,
        )
        if arch["block"] == "modernbert":
            from transformers import ModernBertConfig

            return ModernBertConfig(
                **common,
                hidden_activation=arch["activation"],
                global_attn_every_n_layers=arch["global_attn_every_n_layers"],
                local_attention=arch["local_attention"],
                attention_dropout=arch["dropout"],
                mlp_dropout=arch["dropout"],
                embedding_dropout=arch["dropout"],
                bos_token_id=CLS_ID,
                eos_token_id=SEP_ID,
                cls_token_id=CLS_ID,
                sep_token_id=SEP_ID,
                mask_token_id=MASK_ID,
                sparse_prediction=True,  # the MLM head only at masked positions when labels are given
            )
        from transformers import BertConfig

        return BertConfig(
            **common,
            hidden_act=arch["activation"],
            hidden_dropout_prob=arch["dropout"],
            attention_probs_dropout_prob=arch["dropout"],
        )

    def build(self, arch, data):
        config = self.hf_config(arch, data)
        if arch["block"] == "modernbert":
            from transformers import ModernBertForMaskedLM

            return ModernBertForMaskedLM(config)
        from transformers import BertForMaskedLM

        return BertForMaskedLM(config)

    def load_pretrained(self, folder, arch):
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM.from_pretrained(folder)

    def describe(self, arch):
        return (
            f"{arch['block']} L{arch['num_layers']} H{arch['hidden_size']} A{arch['num_heads']} "
            f"ffn x{arch['ffn_ratio']:g} {arch['activation']}"
        )
