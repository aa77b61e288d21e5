# Mask2Former with a DiNAT-tiny backbone, COCO panoptic, large-scale jitter 1024x1024, 50 epochs
# (368750 iterations, 8 GPUs x 2 images). The authors released only DiNAT-L Mask2Former models;
# this smaller sibling follows mmdet's Swin-T Mask2Former recipe (AdamW 1e-4, wd 0.05, backbone
# lr x0.1, gradient clipping 0.01, drop path 0.3) with COCO dilations for the 1024 crops.
# Inherits mmdet's packaged R-50 Mask2Former config (its optimiser: backbone lr x0.1, no decay on
# the query / level embeddings and norms) and replaces the backbone; the optimiser constructor
# adds no weight decay on the backbone's norms and RPB tables.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
          './_base_/mask2former_dinat.py']
custom_imports = _base_.dinat_imports
model = _base_.mask2former_tiny
optim_wrapper = dict(constructor='DinatOptimWrapperConstructor')
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
