# Mask R-CNN-DiNAT-small, COCO 3x. Reference: 49.3 box AP / 44.0 mask AP.
_base_ = ['./mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_small_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='small',  # embed_dim 96, depths 3-4-18-5, heads 3-6-12-24, mlp_ratio 2
        drop_path_rate=0.35,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
