"""LazyConfig: COCO Mask R-CNN + FPN with DiNAT-small, 3x (see mask_rcnn_dinat_mini_fpn_3x.py)."""
from .mask_rcnn_dinat_mini_fpn_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa

model.backbone.bottom_up.variant = "small"
model.backbone.bottom_up.drop_path_rate = 0.35
