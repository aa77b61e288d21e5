# Mask2Former with DiNAT-L (kernel 11, ImageNet-22K pre-trained), COCO panoptic segmentation.
# Reference: 58.5 PQ. The authors' settings: 'mask2former' dilations, drop path 0.3, 200 queries,
# 100 epochs (737500 iterations of 16 images), backbone lr x0.1, no AMP. Everything else as in
# the DiNAT-tiny config it inherits.
_base_ = ['./mask2former_dinat-tiny_8xb2-lsj-50e_coco-panoptic.py']
model = _base_.mask2former_large
train_dataloader = dict(batch_size=1, num_workers=1)  # 16 GPUs x 1 image
param_scheduler = _base_.large_param_scheduler
train_cfg = _base_.large_train_cfg
