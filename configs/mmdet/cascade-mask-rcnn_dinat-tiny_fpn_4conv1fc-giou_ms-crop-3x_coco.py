# Cascade Mask R-CNN-DiNAT-tiny, COCO 3x. Reference: 52.2 box AP / 45.1 mask AP.
_base_ = ['./cascade-mask-rcnn_dinat-mini_fpn_4conv1fc-giou_ms-crop-3x_coco.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[64, 128, 256, 512]))

