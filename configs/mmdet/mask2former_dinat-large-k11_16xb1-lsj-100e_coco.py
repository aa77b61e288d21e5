# Mask2Former with DiNAT-L (kernel 11, ImageNet-22K pre-trained), COCO instance segmentation.
# Reference: 50.8 mask AP. Settings as in the panoptic DiNAT-L config.
_base_ = ['./mask2former_dinat-tiny_8xb2-lsj-50e_coco.py']
model = _base_.mask2former_large
train_dataloader = dict(batch_size=1, num_workers=1)  # 16 GPUs x 1 image
param_scheduler = _base_.large_param_scheduler
train_cfg = _base_.large_train_cfg
