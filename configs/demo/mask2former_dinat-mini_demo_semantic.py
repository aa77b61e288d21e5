# Mask2Former (mmseg's Mask2FormerHead) with DiNAT-mini, from random weights, on the synthetic
# ADE20K-layout demo data (dinat_backbone.demo_data.make_ade_semantic: 192 px, label PNGs with
# 0 = unlabelled, reduce_zero_label=True -> 5 classes sky, ground, circle, square, triangle).
# mmseg's packaged Mask2Former recipe (losses, Hungarian matcher, point sampling, AdamW, clipping
# 0.01) with a head sized for a CPU: 128-channel pixel decoder and queries, 2 deformable encoder
# layers, 3 masked-attention decoder layers (one round over the 3 feature levels), 20 queries,
# 3136 sampled points per mask. Backbone at the full learning rate (it starts from random weights).
# tools/demo_mask2former.py runs it (data root, iterations, schedule; at 128 px by default,
# dilations re-derived for that size); by hand, at 192 px:
#   python tools/make_demo_data.py --out demo_data
#   python tools/mm_train.py configs/demo/mask2former_dinat-mini_demo_semantic.py
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', '../_base_/dinat.py']
custom_imports = dict(imports=['dinat_backbone.mmengine', 'mmdet.models'],
                      allow_failed_imports=False)

classes = ('sky', 'ground', 'circle', 'square', 'triangle')
num_classes = len(classes)
image_size = 192
crop_size = (image_size, image_size)
# dinat_backbone.derive_dilations(192) (see configs/demo/mask-rcnn_dinat-mini_demo.py)
dilations = [[1, 6, 1], [1, 3, 1, 3], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
hidden = 128
num_queries = 20
max_iters = 120
warmup_iters = 20
lr = 1e-3

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_base_.dinat_backbone, dilations=dilations, drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(
        in_channels=[64, 128, 256, 512],
        feat_channels=hidden,
        out_channels=hidden,
        num_classes=num_classes,
        num_queries=num_queries,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=hidden, num_heads=4),
                    ffn_cfg=dict(embed_dims=hidden, feedforward_channels=4 * hidden))),
            positional_encoding=dict(num_feats=hidden // 2)),
        positional_encoding=dict(num_feats=hidden // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=hidden, num_heads=4),
                cross_attn_cfg=dict(embed_dims=hidden, num_heads=4),
                ffn_cfg=dict(embed_dims=hidden, feedforward_channels=4 * hidden))),
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
        train_cfg=dict(num_points=3136)),
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
dataset = dict(_delete_=True, type='BaseSegDataset', data_root='demo_data/ade', metainfo=metainfo,
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
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    constructor='DinatOptimWrapperConstructor',
    optimizer=dict(lr=lr),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0, decay_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1,
                    save_best=None),
    visualization=dict(type='SegVisualizationHook', draw=False))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
