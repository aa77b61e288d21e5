# Cascade Mask R-CNN-DiNAT-large, COCO 3x. Reference: 55.3 box AP / 47.8 mask AP (ImageNet-22K pre-trained).
_base_ = ['./cascade-mask-rcnn_dinat-mini_fpn_4conv1fc-giou_ms-crop-3x_coco.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='large',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[192, 384, 768, 1536]))

optim_wrapper = dict(optimizer=dict(lr=0.000075))
