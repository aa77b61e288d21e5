"""Helpers shared by the model tests: a small DiNAT configuration, and the perturbation of a
transformers DiNAT model's parameters that makes every one of them matter."""
import torch

from dinat_backbone import DinatConfig


def small_config(**kw):
    base = dict(embed_dim=16, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
                dilations=[[1], [1, 2], [1], [1]], kernel_size=3, drop_path_rate=0.0)
    base.update(kw)
    return DinatConfig(**base)


def randomise(model, seed=0):
    """transformers initialises rpb to zero, layer scale to a constant and norms to 1 / 0:
    perturb every parameter so that each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("layer_scale_parameters"):
                p.copy_(0.5 + 0.5 * noise.abs())
            else:
                p.add_(0.05 * noise)
    return model.eval()
