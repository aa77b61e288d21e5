# The demo configs' schedule (they add their learning-rate curve): iteration-based training,
# AdamW with gradient clipping and the DiNAT no-weight-decay rule, validation at the end.
max_iters = 150
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper', constructor='DinatOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=10.0, norm_type=2))
