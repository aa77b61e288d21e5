# UPerNet-DiNAT-large (ImageNet-22K pre-trained), ADE20K 640x640 crops, 160k iterations.
# Reference: 54.0 / 54.9 mIoU (single / multi-scale). Same recipe as mini..base (AdamW 6e-5,
# wd 0.01 without decay on norms / RPB, 1500-iteration warm-up + poly), ADE20K-640 dilations,
# drop path 0.3. mmseg ships no 640x640 UPerNet config to inherit, so this one is assembled from
# mmseg's packaged bases (UPerNet model, ADE20K 640x640 data, runtime, 160k schedule).
# Multi-scale + flip testing: tools/mm_test.py --tta (see _base_/ade20k_tta.py).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k_640x640.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/dinat.py', './_base_/ade20k_tta.py']
custom_imports = _base_.dinat_imports

# large: embed_dim 192, depths 3-4-18-5, heads 6-12-24-48, mlp_ratio 2. The authors' dilations
# for this model: the 'ade20k640' preset except the last stage-3 layer, which they set to 5.
model = dict(
    data_preprocessor=dict(size=(640, 640)),
    backbone=dict(_base_.dinat_backbone, variant='large', drop_path_rate=0.3,
                  dilations=[[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5] * 2 + [1, 5],
                             [1, 2, 1, 2, 1]],
                  init_cfg=dict(type='Pretrained', checkpoint=_base_.in22k_checkpoint.format(''))),
    decode_head=dict(in_channels=[192, 384, 768, 1536], num_classes=150),
    auxiliary_head=dict(in_channels=768, num_classes=150))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='DinatOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)  # 8 GPUs x 2 images
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
tta_pipeline = _base_.ade20k_tta['640']
