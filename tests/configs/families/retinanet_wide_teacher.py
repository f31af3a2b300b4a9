# The teacher of the wide -> narrow pair: a RetinaNet whose FPN is 256 channels wide (mmdet's own
# width) on a ResNet-18 with 16 base channels; its student (retinanet_narrow_student.py) has a
# 128-channel FPN, so every distilled level differs in channels. 64 x 64 images.
_base_ = './retinanet.py'
model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=256),
    bbox_head=dict(in_channels=256, feat_channels=32, stacked_convs=1))
