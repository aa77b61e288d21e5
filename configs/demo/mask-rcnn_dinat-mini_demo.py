# Mask R-CNN + FPN with DiNAT-mini, from random weights, on the synthetic demo shapes
# (dinat_backbone.demo_data.make_coco_instances: 192 px, 3 classes). Sized for a CPU: 128-channel
# FPN and heads, RoIAlign sampling_ratio=1 (mmcv's CPU RoIAlign with 0 costs ~40% of an
# iteration; its backward with 2 still ~16%), 300 proposals and 128 sampled RoIs per image, AdamW
# with warm-up and cosine decay: ~2.5 s per iteration on 2 cores. Halving the RoI heads' work
# (64 sampled RoIs, 64-channel mask head) made iterations ~25% cheaper but learned less per
# iteration: bbox AP50 0.283 after 300 iterations vs 0.362 after 240 of 360 (README).
# tools/demo.py runs it (and sets the data root, iterations and an optional backbone warm
# start); by hand:
#   python tools/make_demo_data.py --out demo_data
#   python tools/mm_train.py configs/demo/mask-rcnn_dinat-mini_demo.py
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/default_runtime.py',
          '../_base_/dinat.py', './_base_/cpu_schedule.py', '../mmdet/_base_/det_tta.py']
custom_imports = _base_.dinat_imports

classes = ('circle', 'square', 'triangle')
image_size = 192
# dinat_backbone.derive_dilations(192): per stage the largest dilation whose kernel x dilation
# still fits the stage's map (48, 24, 12, 6 px), alternating with 1 -- not the COCO preset, which
# is made for 800-1333 px inputs (stage 1 dilation 28 would wrap a 48 px map).
dilations = [[1, 6, 1], [1, 3, 1, 3], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
max_iters = 300
warmup_iters = 50
fpn_channels = 128

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_base_.dinat_backbone, dilations=dilations, drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn_channels, num_outs=5),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=1),
            out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=1),
            out_channels=fpn_channels),
        mask_head=dict(num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(max_per_img=50)))

# ----------------------------------------------------------------------------------- data
data_root = 'demo_data/coco/'
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 130, 255), (250, 170, 30)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Multi-scale + flip test-time augmentation (tools/demo.py --tta, tools/mm_test.py CFG CKPT --tta):
# mmdet's DetTTAModel (tta_model from ../mmdet/_base_/det_tta.py) on the demo size x 0.75, 1.0,
# 1.25, each view also flipped; boxes only (the tools leave the mask head out and evaluate bbox
# AP). tools/demo.py rescales the views for its --size from tta_ratios.
tta_ratios = [0.75, 1.0, 1.25]
tta_scales = [(int(image_size * r), int(image_size * r)) for r in tta_ratios]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=s, keep_ratio=True) for s in tta_scales],
        [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                               'scale_factor', 'flip', 'flip_direction'))]])]
dataset = dict(type='CocoDataset', data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(dataset, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=4),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'], format_only=False)
test_evaluator = val_evaluator

# ------------------------------------------------------------------------------ schedule
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
# peak rate 3e-4, as tools/demo.py's --lr: over 3 seeds it beat 1e-3 (docs/demo.md)
optim_wrapper = dict(optimizer=dict(lr=3e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=3e-4 * 0.01,
         by_epoch=False, begin=warmup_iters, end=max_iters),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
