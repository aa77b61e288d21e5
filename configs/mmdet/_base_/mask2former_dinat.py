# What the COCO instance and panoptic Mask2Former-DiNAT configs share (they inherit different
# mmdet configs, so they take these values by name).
_base_ = ['../../_base_/dinat.py']

mask2former_tiny = dict(
    backbone=dict(_base_.dinat_backbone, variant='tiny', dilations='coco', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained',
                                checkpoint=_base_.in1k_checkpoint.format('tiny'))),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]),
    init_cfg=None)

# DiNAT-L (kernel 11): 200 queries, 100 epochs = 737500 iterations of 16 images (16 GPUs x 1),
# steps at 655556 and 710184, validation every 5000 iterations and at the end.
mask2former_large = dict(backbone=_base_.dinat_large_k11_m2f,
                         panoptic_head=dict(num_queries=200, in_channels=[192, 384, 768, 1536]))
large_iters = 737500
large_param_scheduler = dict(end=large_iters, milestones=[655556, 710184])
large_train_cfg = dict(max_iters=large_iters, val_interval=5000,
                       dynamic_intervals=[(large_iters // 5000 * 5000 + 1, large_iters)])
