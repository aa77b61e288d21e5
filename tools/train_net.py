#!/usr/bin/env python
"""Train and evaluate detectron2 detectors with a DiNAT backbone (detectron2's DefaultTrainer).

    # the built-in synthetic demo data, on the CPU
    python tools/train_net.py --config-file configs/demo/d2_mask_rcnn_dinat_mini_demo.yaml
    # COCO on 8 GPUs (datasets as detectron2 expects them, $DETECTRON2_DATASETS/coco)
    python tools/train_net.py --num-gpus 8 \\
        --config-file configs/detectron2/mask_rcnn_dinat_tiny_fpn_3x.yaml \\
        MODEL.WEIGHTS /path/to/dinat_tiny_in1k_224.pth
    # evaluate a trained model (+ test-time augmentation); resume an interrupted run
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS W TEST.AUG.ENABLED True
    python tools/train_net.py --config-file CFG --resume
    # 2 processes on CPUs (gloo), or 2 "machines" on one host (run both commands)
    python tools/train_net.py --num-gpus 2 --config-file CFG
    python tools/train_net.py --num-gpus 1 --num-machines 2 --machine-rank 0 \
        --dist-url tcp://127.0.0.1:29500 --config-file CFG   # and --machine-rank 1

Multi-GPU / multi-machine runs go through ``detectron2.engine.launch`` (``--num-gpus``: processes
per machine, GPUs or, without CUDA, CPU processes over gloo; ``--num-machines``,
``--machine-rank``, ``--dist-url``). ``SOLVER.IMS_PER_BATCH`` is the total batch over all
processes. ``TEST.AUG.ENABLED`` adds detectron2's GeneralizedRCNNWithTTA evaluation (results
"bbox_TTA", "segm_TTA"). ``MODEL.WEIGHTS`` may be a detectron2
checkpoint or a released DiNAT checkpoint (the authors' ``.pth``, transformers, converted files):
see ``dinat_backbone.detectron2.DinatCheckpointer``, which reads every file without running code
(a pickle that needs code to load is refused, with how to convert a trusted one). Datasets named
``dinat_demo_coco_{train,val}`` are generated (``DATASETS.DINAT_DEMO``) and registered on the fly.

Config keys this tool adds beside detectron2's and ``MODEL.DINAT.*``: ``SOLVER.OPTIMIZER``
("ADAMW" or "SGD") and ``DATASETS.DINAT_DEMO.*`` (the demo data).
"""
import logging
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dinat_backbone.detectron2 import INSTALL_HINT, detectron2_available  # noqa: E402

if not detectron2_available():
    sys.exit(f"tools/train_net.py: {INSTALL_HINT}")

import torch  # noqa: E402

import detectron2.utils.comm as comm  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.engine import (  # noqa: E402
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    hooks,
    launch,
)
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, verify_results  # noqa: E402
from detectron2.modeling import GeneralizedRCNNWithTTA  # noqa: E402
from detectron2.solver.build import maybe_add_gradient_clipping  # noqa: E402

from dinat_backbone.detectron2 import (  # noqa: E402
    DinatCheckpointer,
    add_dinat_config,
    build_dinat_optimizer_params,
)
from dinat_backbone.detectron2.ddp import cpu_ddp  # noqa: E402
from dinat_backbone.detectron2.demo import add_demo_config, register_demo_datasets_for  # noqa: E402

logger = logging.getLogger("dinat_backbone.train_net")


def _full_model_clipping(optimizer_cls, max_norm: float, norm_type: float):
    """An optimizer class that clips the global gradient norm of all its parameters in step()."""

    class FullModelGradientClipping(optimizer_cls):
        def step(self, closure=None):
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = f"{optimizer_cls.__name__}WithFullModelGradientClipping"
    return FullModelGradientClipping


def build_cfg():
    """detectron2's default config + ``MODEL.DINAT.*`` + this tool's keys (module docstring)."""
    cfg = get_cfg()
    add_dinat_config(cfg)
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    add_demo_config(cfg)
    return cfg


def build_optimizer(cfg, model):
    """AdamW (or SGD) over DiNAT's parameter groups (no weight decay on norms / RPB tables),
    with gradient clipping: ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` "full_model" clips the global
    norm; "value" / "norm" are detectron2's per-parameter clippers."""
    params = build_dinat_optimizer_params(cfg, model)
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    if name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, dict(lr=cfg.SOLVER.BASE_LR, betas=(0.9, 0.999))
    elif name == "SGD":
        cls, kwargs = torch.optim.SGD, dict(lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                                            nesterov=cfg.SOLVER.NESTEROV)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is invalid: use 'ADAMW' or "
                         "'SGD'")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        if clip.CLIP_VALUE <= 0:
            raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE={clip.CLIP_VALUE} is invalid: the "
                             "maximum gradient norm must be > 0")
        cls = _full_model_clipping(cls, clip.CLIP_VALUE, clip.NORM_TYPE)
    else:
        cls = maybe_add_gradient_clipping(cfg, cls)
    return cls(params, **kwargs)


class Trainer(DefaultTrainer):
    """DefaultTrainer + DiNAT's optimizer groups, COCO evaluation and DinatCheckpointer."""

    def __init__(self, cfg):
        with cpu_ddp(cfg):  # several processes on CPUs: DDP without device_ids
            super().__init__(cfg)
        DinatCheckpointer.attach(self, cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if kind != "coco":
            raise ValueError(f"dataset {dataset_name!r} has evaluator_type {kind!r}; "
                             "tools/train_net.py evaluates COCO-style datasets (COCOEvaluator)")
        return DatasetEvaluators([COCOEvaluator(dataset_name, output_dir=output_folder)])

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """detectron2's test-time augmentation (GeneralizedRCNNWithTTA: the sizes of
        ``TEST.AUG.MIN_SIZES`` up to ``TEST.AUG.MAX_SIZE``, plus horizontal flips with
        ``TEST.AUG.FLIP``), evaluated into OUTPUT_DIR/inference_TTA; results keyed
        "<task>_TTA" (bbox_TTA, segm_TTA)."""
        # under detectron2's logger name: default_setup configures only "detectron2*" / "fvcore"
        logging.getLogger("detectron2.trainer").info(
            "Running inference with test-time augmentation ...")
        tta = GeneralizedRCNNWithTTA(cfg, model)
        folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(cfg, name, output_folder=folder)
                      for name in cfg.DATASETS.TEST]
        res = cls.test(cfg, tta, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())


def setup(args):
    cfg = build_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if getattr(args, "amp", None) is not None:
        cfg.SOLVER.AMP.ENABLED = args.amp
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("no CUDA device: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        logging.getLogger(__name__).warning("SOLVER.AMP.ENABLED needs CUDA; training in fp32")
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    default_setup(cfg, args)
    register_demo_datasets_for(cfg)
    return cfg


def main(args):
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        _load(DinatCheckpointer(model, save_dir=cfg.OUTPUT_DIR), cfg.MODEL.WEIGHTS, args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    _load(trainer, None, args.resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks([hooks.EvalHook(
            0, lambda: trainer.test_with_TTA(cfg, trainer.model))])
    return trainer.train()


def _load(loader, weights, resume: bool) -> None:
    """``resume_or_load`` of a checkpointer (``weights`` = MODEL.WEIGHTS) or of the trainer; a
    file that cannot be loaded (refused as unsafe, unreadable, another model's) ends the run with
    the loader's message instead of a traceback."""
    try:
        if weights is None:
            loader.resume_or_load(resume=resume)
        else:
            loader.resume_or_load(weights, resume=resume)
    except ValueError as e:
        sys.exit(f"tools/train_net.py: cannot load the checkpoint: {e}")


def get_parser():
    parser = default_argument_parser(epilog=__doc__)
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="mixed precision (SOLVER.AMP.ENABLED True; CUDA only)")
    amp.add_argument("--no-amp", dest="amp", action="store_false",
                     help="full precision (SOLVER.AMP.ENABLED False)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice). On a busy CPU, 1 "
                             "can be many times faster than 2: OpenMP threads wait for each other")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
