# UPerNet-DiNAT-base, ADE20K 512x512, 160k. Reference: 49.6 / 50.4 mIoU (single / multi-scale).
# embed_dim 128, depths 3-4-18-5, heads 4-8-16-32, layer scale 1e-5.
_base_ = ['./upernet_dinat-small_8xb2-160k_ade20k-512x512.py']
channels = [128, 256, 512, 1024]
model = dict(backbone=dict(variant='base', init_cfg=dict(
    checkpoint=_base_.in1k_checkpoint.format('base'))),
    decode_head=dict(in_channels=channels), auxiliary_head=dict(in_channels=channels[2]))
