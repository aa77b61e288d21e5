# Mask2Former-DiNAT-tiny, COCO instance segmentation, LSJ 1024x1024, 50 epochs: the panoptic
# config's backbone and optimiser on mmdet's packaged R-50 instance config.
_base_ = ['./_base_/mask2former_dinat.py', 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py']  # noqa: E501
custom_imports = _base_.dinat_imports
model = _base_.mask2former_tiny
optim_wrapper = dict(constructor='DinatOptimWrapperConstructor')
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
