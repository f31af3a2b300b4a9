# Shapes teacher: RetinaNet on a slim ResNet-34 (32 base channels), trained from scratch.
# Stock mmdet components only; the data section is filled in by ikd from the preset.
_base_ = ['./shapes_retinanet_r18.py']
model = dict(backbone=dict(depth=34))
