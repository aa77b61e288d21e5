# Mask2Former with a DiNAT-tiny backbone, ADE20K semantic segmentation, 512x512 crops, 160k
# iterations (8 GPUs x 2 images). No authors' reference for this size; it follows mmseg's Swin-T
# Mask2Former recipe (AdamW 1e-4, wd 0.05, backbone lr x0.1, gradient clipping 0.01, poly) with
# the ADE20K-512 dilations and drop path 0.3. Inherits mmseg's packaged R-50 Mask2Former config;
# the optimiser constructor adds no weight decay on the backbone's norms and RPB tables.
# Multi-scale + flip testing: tools/mm_test.py --tta (see _base_/ade20k_tta.py).
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', '../_base_/dinat.py',
          './_base_/ade20k_tta.py']
custom_imports = _base_.dinat_imports
model = dict(
    backbone=dict(_base_.dinat_backbone, variant='tiny', dilations='ade20k512',
                  drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=_base_.in1k_checkpoint.format('tiny'))),
    decode_head=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(constructor='DinatOptimWrapperConstructor')
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
tta_pipeline = _base_.ade20k_tta['512']
