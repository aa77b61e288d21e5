# Mask R-CNN-DiNAT-tiny, COCO 3x. Reference: 48.6 box AP / 43.5 mask AP.
_base_ = ['./mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py']

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='tiny',  # depths 3-4-18-5; the 'coco' pattern repeats over the 18 layers
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[64, 128, 256, 512]))
