"""Names shared by the config (which validates them) and the code that uses them.

Kept free of imports so that every module can import it without creating a cycle.
"""

# Attention backends of ``dinat_backbone.ops.na2d`` (and ``DinatConfig.attention_backend``).
ATTENTION_BACKENDS = ("auto", "tiled", "gather", "natten", "flex", "cpp")

# ``DinatConfig.hidden_act`` -> (module, keyword arguments). The module is a ``torch.nn`` class
# name, or "QuickGELU" (defined in dinat_backbone.modeling). Names are transformers' ACT2FN keys.
ACTIVATIONS = {
    "gelu": ("GELU", {}),
    "gelu_new": ("GELU", {"approximate": "tanh"}),
    "gelu_fast": ("GELU", {"approximate": "tanh"}),
    "gelu_pytorch_tanh": ("GELU", {"approximate": "tanh"}),
    "quick_gelu": ("QuickGELU", {}),
    "relu": ("ReLU", {}),
    "silu": ("SiLU", {}),
    "swish": ("SiLU", {}),
    "tanh": ("Tanh", {}),
    "mish": ("Mish", {}),
}
