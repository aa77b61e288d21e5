# Cascade Mask R-CNN-DiNAT-small, COCO 3x. Reference: 52.9 box AP / 45.8 mask AP.
_base_ = ['./cascade-mask-rcnn_dinat-mini_fpn_4conv1fc-giou_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(variant='small', drop_path_rate=0.5,
                  init_cfg=dict(checkpoint=_base_.in1k_checkpoint.format('small'))),
    neck=dict(in_channels=[96, 192, 384, 768]))
