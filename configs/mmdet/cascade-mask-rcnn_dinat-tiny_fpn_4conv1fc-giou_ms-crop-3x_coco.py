# Cascade Mask R-CNN-DiNAT-tiny, COCO 3x. Reference: 52.2 box AP / 45.1 mask AP.
_base_ = ['./cascade-mask-rcnn_dinat-mini_fpn_4conv1fc-giou_ms-crop-3x_coco.py']
model = dict(backbone=dict(variant='tiny', drop_path_rate=0.3,
                           init_cfg=dict(checkpoint=_base_.in1k_checkpoint.format('tiny'))))
