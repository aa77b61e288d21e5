# UPerNet-DiNAT-small, ADE20K 512x512, 160k. Reference: 48.9 / 49.9 mIoU (single / multi-scale).
_base_ = ['./upernet_dinat-mini_8xb2-160k_ade20k-512x512.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_small_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='small',  # embed_dim 96, depths 3-4-18-5, heads 3-6-12-24, mlp_ratio 2
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
