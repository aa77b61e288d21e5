# UPerNet + FCN auxiliary head with a DiNAT-mini backbone on ADE20K, 512x512 crops, 160k iterations
# (8 GPUs x 2 images). The authors' recipe: AdamW lr 6e-5, weight decay 0.01 except on norms and
# RPB tables, linear warm-up for 1500 iterations then poly (power 1.0) decay, ADE20K-512
# dilations, drop path 0.2. Reference: 45.8 mIoU single-scale / 47.2 multi-scale (REFERENCE.md).
#
# mmseg's own Swin-T UPerNet config already holds that dataset pipeline, schedule and optimiser
# (AdamW 6e-5 / 0.01, LinearLR 1500 + PolyLR power 1.0, batch 2), so this inherits it and
# changes only the backbone, the head widths and the no-decay keys.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['dinat_backbone.mmengine'], allow_failed_imports=False)

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_mini_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        _delete_=True,
        type='DiNAT',
        variant='mini',  # embed_dim 64, depths 3-4-6-5, heads 2-4-8-16, mlp_ratio 3, kernel 7
        dilations='ade20k512',  # [1,16,1] [1,4,1,8] [1,2,1,3,1,4] [1,2,1,2,1]
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))

# No weight decay on norms (every name containing "norm") and relative positional biases ("rpb").
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}))

# Checkpoints are written atomically (temporary name, then rename); see dinat_backbone.mmengine.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
