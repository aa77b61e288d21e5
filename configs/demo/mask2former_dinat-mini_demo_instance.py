# Mask2Former (mmdet) instance segmentation with DiNAT-mini, from random weights, on the synthetic
# demo shapes (dinat_backbone.demo_data.make_coco_instances: 192 px, 3 classes; tools/
# demo_mask2former.py writes them with polygon masks under demo_data/coco_polygon, the data the
# detectron2 + official Mask2Former path reads too). mmdet's packaged Mask2Former COCO instance
# recipe (losses, Hungarian matcher, point sampling, AdamW, clipping 0.01) with a head sized for a
# CPU like configs/demo/mask2former_dinat-mini_demo_semantic.py: 128-channel pixel decoder and
# queries, 2 deformable encoder layers, 3 masked-attention decoder layers, 20 queries, 3136
# sampled points. No large-scale jitter (a fixed 192 px input and horizontal flips), backbone at
# the full learning rate (random weights). tools/demo_mask2former.py runs it (at 128 px by
# default, dilations re-derived for that size); by hand, at 192 px, once
# `python tools/demo_mask2former.py --size 192 ...` has written demo_data/coco_polygon:
#   python tools/mm_train.py configs/demo/mask2former_dinat-mini_demo_instance.py
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', '../_base_/dinat.py']
custom_imports = _base_.dinat_imports

classes = ('circle', 'square', 'triangle')
num_classes = len(classes)
image_size = 192
# dinat_backbone.derive_dilations(192) (see configs/demo/mask-rcnn_dinat-mini_demo.py)
dilations = [[1, 6, 1], [1, 3, 1, 3], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
hidden = 128
num_queries = 20
max_iters = 120
warmup_iters = 20
lr = 1e-3

model = dict(
    data_preprocessor=dict(batch_augments=None),
    backbone=dict(_base_.dinat_backbone, dilations=dilations, drop_path_rate=0.0, init_cfg=None),
    panoptic_head=dict(
        in_channels=[64, 128, 256, 512],
        feat_channels=hidden,
        out_channels=hidden,
        num_things_classes=num_classes,
        num_stuff_classes=0,
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
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_classes, num_stuff_classes=0),
    train_cfg=dict(num_points=3136),
    test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True, max_per_image=50))

# ----------------------------------------------------------------------------------- data
data_root = 'demo_data/coco_polygon/'
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
dataset = dict(_delete_=True, type='CocoDataset', data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True), batch_sampler=None,
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
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters,
                 dynamic_intervals=None)
optim_wrapper = dict(
    constructor='DinatOptimWrapperConstructor',
    optimizer=dict(lr=lr),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0, decay_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
