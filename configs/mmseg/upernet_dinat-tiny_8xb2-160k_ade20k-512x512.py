# UPerNet-DiNAT-tiny, ADE20K 512x512, 160k. Reference: 47.8 / 48.8 mIoU (single / multi-scale).
# depths 3-4-18-5; the 'ade20k512' dilation pattern repeats over the 18 layers.
_base_ = ['./upernet_dinat-mini_8xb2-160k_ade20k-512x512.py']
model = dict(backbone=dict(variant='tiny', drop_path_rate=0.3,
                           init_cfg=dict(checkpoint=_base_.in1k_checkpoint.format('tiny'))))
