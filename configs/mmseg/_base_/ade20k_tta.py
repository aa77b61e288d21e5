# Multi-scale + flip test-time augmentation on ADE20K, the authors' recipe: the test size
# (2048x512, or 2560x640 for the 640 px models) scaled by 0.5, 0.75, ..., 1.75, each view also
# flipped horizontally; mmseg's SegTTAModel (the tta_model of its default runtime) averages the
# views' class probabilities. A config picks its size: tta_pipeline = _base_.ade20k_tta['512'].
tta_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
ade20k_tta = {str(side): [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(4 * side * r), int(side * r)), keep_ratio=True)
         for r in tta_ratios],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])] for side in (512, 640)}
