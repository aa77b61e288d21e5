# Cascade Mask R-CNN-DiNAT-base, COCO 3x. Reference: 53.4 box AP / 46.2 mask AP.
_base_ = ['./cascade-mask-rcnn_dinat-mini_fpn_4conv1fc-giou_ms-crop-3x_coco.py']
embed_dim = 128
model = dict(backbone=dict(variant='base', drop_path_rate=0.6, init_cfg=dict(
    checkpoint=_base_.in1k_checkpoint.format('base'))),
    neck=dict(in_channels=[embed_dim * 2**i for i in range(4)]))
optim_wrapper = dict(optimizer=dict(lr=0.000075))
