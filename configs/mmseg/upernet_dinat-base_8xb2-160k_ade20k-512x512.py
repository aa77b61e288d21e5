# UPerNet-DiNAT-base, ADE20K 512x512, 160k. Reference: 49.6 / 50.4 mIoU (single / multi-scale).
_base_ = ['./upernet_dinat-mini_8xb2-160k_ade20k-512x512.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_base_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='base',  # embed_dim 128, depths 3-4-18-5, heads 4-8-16-32, layer scale 1e-5
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
