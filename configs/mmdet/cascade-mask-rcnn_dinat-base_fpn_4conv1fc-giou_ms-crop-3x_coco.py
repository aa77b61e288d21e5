# Cascade Mask R-CNN-DiNAT-base, COCO 3x. Reference: 53.4 box AP / 46.2 mask AP.
_base_ = ['./cascade-mask-rcnn_dinat-mini_fpn_4conv1fc-giou_ms-crop-3x_coco.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_base_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(optimizer=dict(lr=0.000075))
