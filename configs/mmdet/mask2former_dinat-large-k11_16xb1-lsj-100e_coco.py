# Mask2Former with DiNAT-L (kernel 11, ImageNet-22K pre-trained), COCO instance segmentation (reference: 50.8 mask AP).
# The authors' settings: the 'mask2former' dilations (written out below as their list),
# drop path 0.3, 200 queries, 100 epochs (737500 iterations of 16 images, steps at 655556 and
# 710184), backbone lr x0.1, no AMP. Everything else as in the DiNAT-tiny config it inherits.
_base_ = ['./mask2former_dinat-tiny_8xb2-lsj-50e_coco.py']

# The released 11x11 ImageNet-22K weights (the 7x7 ones with interpolated RPB tables).
checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224_11x11interp.pth'  # noqa: E501
model = dict(
    backbone=dict(
        variant='large_k11',  # embed_dim 192, depths 3-4-18-5, heads 6-12-24-48, kernel 11
        dilations=[[1, 14, 1], [1, 4, 1, 7],
                   [1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 3], [1, 1, 1, 1, 1]],
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    panoptic_head=dict(num_queries=200, in_channels=[192, 384, 768, 1536]))

train_dataloader = dict(batch_size=1, num_workers=1)  # 16 GPUs x 1 image

max_iters = 737500
param_scheduler = dict(end=max_iters, milestones=[655556, 710184])
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
train_cfg = dict(
    max_iters=max_iters, val_interval=interval, dynamic_intervals=dynamic_intervals)
