# UPerNet-DiNAT-small, ADE20K 512x512, 160k. Reference: 48.9 / 49.9 mIoU (single / multi-scale).
# embed_dim 96, depths 3-4-18-5, heads 3-6-12-24, mlp_ratio 2.
_base_ = ['./upernet_dinat-mini_8xb2-160k_ade20k-512x512.py']
model = dict(
    backbone=dict(variant='small', drop_path_rate=0.5,
                  init_cfg=dict(checkpoint=_base_.in1k_checkpoint.format('small'))),
    decode_head=dict(in_channels=[96, 192, 384, 768]), auxiliary_head=dict(in_channels=384))
