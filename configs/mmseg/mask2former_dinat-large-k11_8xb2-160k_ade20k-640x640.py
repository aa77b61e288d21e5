# Mask2Former with DiNAT-L (kernel 11, ImageNet-22K pre-trained), ADE20K semantic segmentation,
# 640x640 crops, 160k iterations. Reference: 58.1 mIoU (multi-scale). The authors' settings:
# 'mask2former' dilations, drop path 0.3, 100 queries, backbone lr x0.1, no AMP. Inherits mmseg's
# packaged Swin-B 640x640 Mask2Former config (ADE20K 640x640 data, the same head and schedule)
# and replaces the backbone and Swin's optimiser keys. Multi-scale + flip testing:
# tools/mm_test.py --tta (see _base_/ade20k_tta.py).
_base_ = ['mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py',
          '../_base_/dinat.py', './_base_/ade20k_tta.py']
custom_imports = _base_.dinat_imports
model = dict(backbone=_base_.dinat_large_k11_m2f,
             decode_head=dict(num_queries=100, in_channels=[192, 384, 768, 1536]))
embed = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(constructor='DinatOptimWrapperConstructor', paramwise_cfg=dict(
    _delete_=True, norm_decay_mult=0.0, custom_keys={
        'backbone': dict(lr_mult=0.1, decay_mult=1.0), 'query_embed': embed,
        'query_feat': embed, 'level_embed': embed}))
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
tta_pipeline = _base_.ade20k_tta['640']
