# What every DiNAT config for mmdet / mmseg shares: the backbone entry and the released
# ImageNet checkpoints. A config lists this file among its _base_ and writes, e.g.
#   model = dict(backbone=dict(_base_.dinat_backbone, dilations='coco', drop_path_rate=0.2))
# A backbone field left out takes the DiNAT core's default (e.g. drop_path_rate 0.1); the
# configs that follow the authors set their values explicitly. Weight decay: the optimiser
# constructor 'DinatOptimWrapperConstructor' turns it off on the backbone's norms and relative
# position biases (the core's no-weight-decay policy), on top of the config's custom_keys.
dinat_imports = dict(imports=['dinat_backbone.mmengine'], allow_failed_imports=False)
in1k_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_{}_in1k_224.pth'  # noqa: E501
in22k_checkpoint = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224{}.pth'  # noqa: E501
dinat_backbone = dict(
    _delete_=True, type='DiNAT', variant='mini', out_indices=(0, 1, 2, 3), frozen_stages=-1,
    with_cp=False, init_cfg=dict(type='Pretrained', checkpoint=in1k_checkpoint.format('mini')))
# Mask2Former with DiNAT-L, kernel 11 (the 7x7 ImageNet-22K weights with interpolated RPB
# tables): the authors' backbone for COCO and ADE20K. 'mask2former' dilations: [1,14,1] [1,4,1,7]
# [1,2,1,3] x 4 + [1,3] [1,1,1,1,1].
dinat_large_k11_m2f = dict(
    dinat_backbone, variant='large_k11', dilations='mask2former', drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint=in22k_checkpoint.format('_11x11interp')))
