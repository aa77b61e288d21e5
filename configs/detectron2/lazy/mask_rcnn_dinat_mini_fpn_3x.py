"""LazyConfig: COCO Mask R-CNN + FPN with DiNAT-mini, 3x schedule, the authors' recipe.

The same model and recipe as ../mask_rcnn_dinat_mini_fpn_3x.yaml, written with ``L(D2DiNAT)``.
Train with detectron2's tools/lazyconfig_train_net.py (from a detectron2 checkout)::

    python /path/to/detectron2/tools/lazyconfig_train_net.py --num-gpus 8 \\
        --config-file configs/detectron2/lazy/mask_rcnn_dinat_mini_fpn_3x.py \\
        train.init_checkpoint=/path/to/dinat_mini_in1k_224.pth

(importing this file registers DiNAT; ``train.init_checkpoint`` goes through detectron2's own
DetectionCheckpointer, not this project's, so give it a detectron2-format ``.pth``: convert a
released checkpoint with tools/convert_weights.py SRC DST.pth --to detectron2. detectron2 reads a
``.pth`` with torch's weights-only loader, but a ``.pkl`` with plain pickle, which runs any code
the file holds; tools/train_net.py's DinatCheckpointer reads both safely).
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.solver import WarmupParamScheduler

from dinat_backbone.detectron2 import D2DiNAT, get_dinat_optimizer_params

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
optimizer = model_zoo.get_config("common/optim.py").AdamW
train = model_zoo.get_config("common/train.py").train

# DiNAT-mini with the COCO dilations ([1,28,1], [1,7,1,14], [1,3,1,5,1,7], [1,3,1,3,1]);
# drop path 0.2 as the authors' Mask R-CNN mini / tiny.
model.backbone.bottom_up = L(D2DiNAT)(
    variant="mini",
    dilations="coco",
    drop_path_rate=0.2,
    out_features=["res2", "res3", "res4", "res5"],
    freeze_at=0,
)
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
# ImageNet normalisation, RGB input
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

# multi-scale training: short side 480..800 (step 32), long side <= 1333
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=tuple(range(480, 801, 32)), sample_style="choice",
                            max_size=1333),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 16

# AdamW lr 1e-4, weight decay 0.05; none on normalisation layers and on DiNAT's RPB tables
# (get_dinat_optimizer_params: detectron2's groups + the core's is_no_weight_decay)
optimizer.params = L(get_dinat_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0)
optimizer.lr = 1e-4
optimizer.weight_decay = 0.05

# 36 epochs at batch 16 = 270k iterations; lr x0.1 at epochs 27 and 33; 500 warm-up iterations
train.max_iter = 270000
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01],
                                         milestones=[202500, 247500, 270000]),
    warmup_length=500 / 270000,
    warmup_method="linear",
    warmup_factor=0.001,
)
train.amp.enabled = True
train.checkpointer.period = 10000
train.eval_period = 270000
