"""Layer 5 — stage 2 of the pipeline: IKD distillation (``ikd distill``).

``losses/`` (one loss per file, registered into mmdet), ``distiller`` (teacher + student in one
mmdet detector), ``pipelines`` (IKD's sample-specific augmentation as mmdet pipeline steps),
``hooks`` (the stage switch, the student-alone checkpoints), ``config`` (a preset -> the
distillation run's mmdet Config), ``run`` (the command's work).

Imports ``core``, ``config``, ``data``, ``attack`` (the adversarial set's records) and ``train``.
"""
