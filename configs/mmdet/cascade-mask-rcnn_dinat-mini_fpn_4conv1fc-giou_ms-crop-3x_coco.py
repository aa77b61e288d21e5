# Cascade Mask R-CNN + FPN (4conv1fc box heads with SyncBN, GIoU loss) with a DiNAT-mini backbone
# on COCO, 3x schedule, multi-scale 480-800 with the DETR-style crop branch. The authors' recipe:
# AdamW lr 1e-4 (7.5e-5 for base / large), weight decay 0.05 except on norms and RPB tables,
# steps at epochs 27 and 33, COCO dilations, drop path 0.2. Reference: 51.2 box AP / 44.4 mask AP.
#
# mmdet's ConvNeXt-T Cascade Mask R-CNN 3x config has exactly these heads, pipeline and schedule;
# this inherits it and replaces the backbone (and its mmpretrain import) and the optimiser.
# The authors trained mini..base with fp16 (--amp in tools/mm_train.py), large in fp32.
_base_ = [
    'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
    '../_base_/dinat.py', './_base_/det_tta.py']
custom_imports = _base_.dinat_imports

model = dict(backbone=dict(_base_.dinat_backbone, dilations='coco', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='DinatOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
