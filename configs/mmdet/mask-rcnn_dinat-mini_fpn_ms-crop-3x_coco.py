# Mask R-CNN + FPN with a DiNAT-mini backbone on COCO, 3x schedule (36 epochs, 8 GPUs x 2 images),
# multi-scale training (shorter side 480-800, DETR-style crop branch). The authors' recipe: AdamW
# lr 1e-4, weight decay 0.05 except on norms and RPB tables, steps at epochs 27 and 33, COCO
# dilations, drop path 0.2. Reference: 47.2 box AP / 42.5 mask AP.
#
# mmdet's own Swin-T Mask R-CNN 3x config holds that data pipeline, schedule and optimiser, so
# this inherits it and changes only the backbone, the FPN input widths and the no-decay rule.
# The authors trained mini..small with fp16; add --amp to tools/mm_train.py for that.
# No gradient clipping, as in the authors' configs (grad_clip=None); to add it:
#   --cfg-options optim_wrapper.clip_grad.max_norm=1.0
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', '../_base_/dinat.py',
          './_base_/det_tta.py']
custom_imports = _base_.dinat_imports

# mini: embed_dim 64, depths 3-4-6-5, heads 2-4-8-16, mlp_ratio 3, kernel 7
# 'coco' dilations: [1,28,1] [1,7,1,14] [1,3,1,5,1,7] [1,3,1,3,1]
model = dict(backbone=dict(_base_.dinat_backbone, dilations='coco', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(constructor='DinatOptimWrapperConstructor', paramwise_cfg=None)

# Checkpoints are written atomically (temporary name, then rename); see dinat_backbone.mmengine.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
