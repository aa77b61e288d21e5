# UPerNet (+ FCN auxiliary head) with DiNAT-mini, from random weights, on the synthetic
# ADE20K-layout demo data (dinat_backbone.demo_data.make_ade_semantic: 192 px; label PNGs with
# 0 = unlabelled, reduce_zero_label=True -> 5 classes sky, ground, circle, square, triangle).
# Sized for a CPU (128-channel decode head, BN instead of SyncBN). tools/demo.py runs it.
_base_ = ['mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/default_runtime.py',
          '../_base_/dinat.py', './_base_/cpu_schedule.py']
custom_imports = _base_.dinat_imports

classes = ('sky', 'ground', 'circle', 'square', 'triangle')
image_size = 192
crop_size = (image_size, image_size)
# dinat_backbone.derive_dilations(192) (see the Mask R-CNN demo config)
dilations = [[1, 6, 1], [1, 3, 1, 3], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
warmup_iters = 20
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_base_.dinat_backbone, dilations=dilations, drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=128, num_classes=len(classes),
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, num_classes=len(classes),
                        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

# ----------------------------------------------------------------------------------- data
metainfo = dict(classes=classes, palette=[[120, 170, 255], [120, 90, 40], [220, 20, 60],
                                          [0, 200, 80], [250, 200, 30]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# Multi-scale + flip test-time augmentation (tools/demo.py --tta, tools/mm_test.py CFG CKPT --tta):
# the demo size x 0.75, 1.0, 1.25, each view also flipped; mmseg's SegTTAModel (the tta_model of
# its default runtime) averages the views' class probabilities. tools/demo.py rescales the views
# for its --size from tta_ratios.
tta_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(image_size * r), int(image_size * r)), keep_ratio=True)
         for r in tta_ratios],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=True)],
        [dict(type='PackSegInputs')]])]
dataset = dict(type='BaseSegDataset', data_root='demo_data/ade', metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(dataset, pipeline=train_pipeline, data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, pipeline=test_pipeline, data_prefix=dict(
        img_path='images/validation', seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ------------------------------------------------------------------------------ schedule
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=_base_.max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=_base_.max_iters,
                    max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
