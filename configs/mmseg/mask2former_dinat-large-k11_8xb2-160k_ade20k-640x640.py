# Mask2Former with DiNAT-L (kernel 11, ImageNet-22K pre-trained), ADE20K semantic segmentation,
# 640x640 crops, 160k iterations. Reference: 58.1 mIoU (multi-scale). The authors' settings:
# the 'mask2former' dilations (their list below), drop path 0.3, 100 queries, backbone lr x0.1,
# no AMP. Inherits mmseg's packaged Swin-B 640x640 Mask2Former config (ADE20K 640x640 data, the
# same head and schedule) and replaces the backbone and the no-decay keys.
_base_ = ['mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py']

custom_imports = dict(imports=['dinat_backbone.mmengine'], allow_failed_imports=False)

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/dinat_large_in22k_224_11x11interp.pth'  # noqa: E501
depths = [3, 4, 18, 5]
model = dict(
    backbone=dict(
        _delete_=True,
        type='DiNAT',
        variant='large_k11',
        dilations=[[1, 14, 1], [1, 4, 1, 7],
                   [1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 3], [1, 1, 1, 1, 1]],
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(num_queries=100, in_channels=[192, 384, 768, 1536]))

backbone_no_decay = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.patch_embed.norm': backbone_no_decay,
    'backbone.norm': backbone_no_decay,
    'query_embed': embed_multi,
    'query_feat': embed_multi,
    'level_embed': embed_multi,
}
custom_keys.update({
    f'backbone.levels.{i}.blocks.{j}.{name}': backbone_no_decay
    for i, depth in enumerate(depths) for j in range(depth) for name in ('norm', 'attn.rpb')
})
custom_keys.update({
    f'backbone.levels.{i}.downsample.norm': backbone_no_decay for i in range(len(depths) - 1)
})
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, custom_keys=custom_keys,
                                        norm_decay_mult=0.0))

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
