# UPerNet-DiNAT-tiny, ADE20K 512x512, 160k. Reference: 47.8 / 48.8 mIoU (single / multi-scale).
_base_ = ['./upernet_dinat-mini_8xb2-160k_ade20k-512x512.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='tiny',  # depths 3-4-18-5; dilations 'ade20k512' repeat over the 18 layers
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
