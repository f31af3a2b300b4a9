# The student of the wide -> narrow pair: a RetinaNet with a 128-channel FPN on a ResNet-18 with
# 8 base channels (its teacher, retinanet_wide_teacher.py, has 256). 64 x 64 images.
_base_ = './retinanet.py'
model = dict(
    neck=dict(out_channels=128),
    bbox_head=dict(in_channels=128, feat_channels=32, stacked_convs=1))
