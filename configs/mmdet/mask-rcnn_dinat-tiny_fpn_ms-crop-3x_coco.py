# Mask R-CNN-DiNAT-tiny, COCO 3x. Reference: 48.6 box AP / 43.5 mask AP.
# depths 3-4-18-5; the 'coco' dilation pattern repeats over the 18 layers.
_base_ = ['./mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py']
model = dict(backbone=dict(variant='tiny', init_cfg=dict(
    checkpoint=_base_.in1k_checkpoint.format('tiny'))))
