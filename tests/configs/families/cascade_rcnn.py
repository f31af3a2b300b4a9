# Tiny Cascade R-CNN (mmdet's cascade_rcnn_r50_fpn_1x_coco: three box stages with rising IoU
# thresholds) for the family matrix: ResNet-18 with 8 base channels, 16-channel FPN and heads,
# no pretrained weights, 64 x 64 images.
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'cascade_rcnn', 'cascade_rcnn_r50_fpn_1x_coco.py')
_stds = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=-1, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=[dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32, roi_feat_size=7, num_classes=80,
                        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=s),
                        reg_class_agnostic=True,
                        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0)) for s in _stds]),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100)),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)))
# its own pipelines, at 64 x 64 (the test's preset sets data.img_scale)
