# Tiny GFL (mmdet's gfl_r50_fpn_1x_coco: quality focal loss, distribution focal loss, GN head)
# for the family matrix: ResNet-18 with 8 base channels, 16-channel FPN and head, no pretrained
# weights, 64 x 64 images.
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'gfl', 'gfl_r50_fpn_1x_coco.py')
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=-1, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=2,
                   norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
    test_cfg=dict(nms_pre=100, max_per_img=20))
# its own pipelines, at 64 x 64 (the test's preset sets data.img_scale)
