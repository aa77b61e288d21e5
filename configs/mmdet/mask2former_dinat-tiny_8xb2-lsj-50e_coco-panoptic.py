# Mask2Former with a DiNAT-tiny backbone, COCO panoptic, large-scale jitter 1024x1024, 50 epochs
# (368750 iterations, 8 GPUs x 2 images). The authors released only DiNAT-L Mask2Former models;
# this smaller sibling follows mmdet's Swin-T Mask2Former recipe (AdamW 1e-4, wd 0.05, backbone
# lr x0.1, gradient clipping 0.01, drop path 0.3) with COCO dilations for the 1024 crops.
# Inherits mmdet's packaged R-50 Mask2Former config; replaces the backbone and the no-decay keys.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py']

custom_imports = dict(imports=['dinat_backbone.mmengine'], allow_failed_imports=False)

checkpoint_file = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth'  # noqa: E501
depths = [3, 4, 18, 5]
model = dict(
    backbone=dict(
        _delete_=True,
        type='DiNAT',
        variant='tiny',
        dilations='coco',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]),
    init_cfg=None)

# Backbone at 0.1x the learning rate; no weight decay on its norms and RPB tables, nor on the
# query / level embeddings. mmengine applies only the longest matching key, so the backbone's
# norms and RPBs are listed per layer (longer than 'backbone').
backbone_no_decay = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.patch_embed.norm': backbone_no_decay,
    'backbone.norm': backbone_no_decay,  # the per-output norms norm0..norm3
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
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=custom_keys, norm_decay_mult=0.0))

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
