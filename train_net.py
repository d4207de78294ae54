#!/usr/bin/env python
"""
Train or evaluate any panoptic_zoo method; the method is chosen by the config file.

    python train_net.py --config-file configs/shapes/panoptic_fpn_R_18.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume
    python train_net.py --config-file ... --num-gpus 2    # without CUDA: 2 CPU processes (gloo)
    python train_net.py --config-file ... --dataset my_train IMAGES PANOPTIC.json PANOPTIC_PNGS \
        DATASETS.TRAIN "('my_train',)"                      # your own dataset (docs/DATASETS.md)

Training checks the training data first (python -m panoptic_zoo.data.check) and stops, listing
every problem, before the first iteration.
"""

from detectron2.engine import default_argument_parser, launch

from panoptic_zoo.acceleration import restart_with_heap_tunables, reuse_freed_heap_memory
from panoptic_zoo.data.datasets.custom import add_dataset_argument
from panoptic_zoo.engine import Trainer, build_inference_model, setup_cfg


def main(args):
    cfg = setup_cfg(args)
    if cfg.MODEL.DEVICE == "cpu":
        # Freed tensor memory kept for reuse by this process (see the allocator's module).
        reuse_freed_heap_memory()
    if args.eval_only:
        model = build_inference_model(cfg, cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    # Starts again with glibc's thread cache off, for the heap setting below (see the allocator's
    # module); before launch, whose processes inherit it.
    restart_with_heap_tunables()
    parser = default_argument_parser()
    add_dataset_argument(parser)
    args = parser.parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
