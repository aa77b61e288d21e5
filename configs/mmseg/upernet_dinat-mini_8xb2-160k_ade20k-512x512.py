# UPerNet + FCN auxiliary head with a DiNAT-mini backbone on ADE20K, 512x512 crops, 160k iterations
# (8 GPUs x 2 images). The authors' recipe: AdamW lr 6e-5, weight decay 0.01 except on norms and
# RPB tables, linear warm-up for 1500 iterations then poly (power 1.0) decay, ADE20K-512
# dilations, drop path 0.2. Reference: 45.8 mIoU single-scale / 47.2 multi-scale.
#
# mmseg's own Swin-T UPerNet config already holds that dataset pipeline, schedule and optimiser
# (AdamW 6e-5 / 0.01, LinearLR 1500 + PolyLR power 1.0, batch 2), so this inherits it and
# changes only the backbone, the head widths and the no-decay rule. Multi-scale + flip testing:
# tools/mm_test.py --tta (see _base_/ade20k_tta.py).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
          '../_base_/dinat.py', './_base_/ade20k_tta.py']
custom_imports = _base_.dinat_imports

# mini: embed_dim 64, depths 3-4-6-5, heads 2-4-8-16, mlp_ratio 3, kernel 7
# 'ade20k512' dilations: [1,16,1] [1,4,1,8] [1,2,1,3,1,4] [1,2,1,2,1]
model = dict(
    backbone=dict(_base_.dinat_backbone, dilations='ade20k512', drop_path_rate=0.2),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))
optim_wrapper = dict(constructor='DinatOptimWrapperConstructor', paramwise_cfg=None)

# Checkpoints are written atomically (temporary name, then rename); see dinat_backbone.mmengine.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
tta_pipeline = _base_.ade20k_tta['512']
