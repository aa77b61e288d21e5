# Cascade Mask R-CNN-DiNAT-large, COCO 3x, ImageNet-22K pre-trained, fp32.
# Reference: 55.3 box AP / 47.8 mask AP.
_base_ = ['./cascade-mask-rcnn_dinat-base_fpn_4conv1fc-giou_ms-crop-3x_coco.py']
embed_dim = 192
model = dict(backbone=dict(variant='large', init_cfg=dict(
    checkpoint=_base_.in22k_checkpoint.format(''))),
    neck=dict(in_channels=[embed_dim * 2**i for i in range(4)]))
