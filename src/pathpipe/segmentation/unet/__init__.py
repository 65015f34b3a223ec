"""Neural nuclei segmentation: a diffusion-UNet HoVer-Net and DDPM pretraining.

The ``unet`` method of the segmentation stage, and label-efficient pretraining
after "Label-efficient multi-organ segmentation with a diffusion model":
pretrain a DDPM (Ho et al. 2020) on unlabelled tiles
(:func:`~pathpipe.segmentation.unet.diffusion.pretrain_diffusion`), then train
the segmentation network on few labelled tiles with its UNet as backbone
(:func:`~pathpipe.segmentation.unet.train.train_segmentation` with
``strategy="linear"``, ``"decoder"`` or ``"full"``). Outputs and
post-processing follow HoVer-Net (Graham et al. 2019).

Modules, one concern each (import names from them; ``config``, ``targets``,
``postprocess`` and ``run`` do not import torch):

========================  ====================================================
``config``                :class:`ModelConfig`, the fine-tuning ``STRATEGIES``
``targets``               HV maps and training targets (numpy)
``postprocess``           HoVer-Net watershed and instance types (numpy)
``model``                 :class:`SegmentationNet`, :func:`build_model`
``losses``                HoVer-Net loss
``data``                  crops, augmentation, tile sampling from stores
``train``                 :func:`train_segmentation`, fine-tuning strategies
``diffusion``             :func:`pretrain_diffusion`
``predict``               :func:`predict_tiles`
``io``                    :func:`save_model`, :func:`load_model` (safetensors)
``_loop``                 the optimiser loop, :class:`TrainResult`
``run``                   path level of ``pathpipe segmentation train|pretrain``:
                          :class:`TrainingParams`, :func:`train_unet`,
                          :func:`pretrain_unet`
========================  ====================================================
"""
