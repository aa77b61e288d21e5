# Mask R-CNN-DiNAT-small, COCO 3x. Reference: 49.3 box AP / 44.0 mask AP.
# embed_dim 96, depths 3-4-18-5, heads 3-6-12-24, mlp_ratio 2.
_base_ = ['./mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(variant='small', drop_path_rate=0.35,
                  init_cfg=dict(checkpoint=_base_.in1k_checkpoint.format('small'))),
    neck=dict(in_channels=[96, 192, 384, 768]))
