# Tiny ATSS (mmdet's atss_r50_fpn_1x_coco: ATSS assigner, centerness, GN head) for the family
# matrix: ResNet-18 with 8 base channels, 16-channel FPN and head, no pretrained weights, 64 x 64.
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'atss', 'atss_r50_fpn_1x_coco.py')
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=-1, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=2,
                   norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
    test_cfg=dict(nms_pre=100, max_per_img=20))
# the stock 1333 x 800 pipelines at 64 x 64
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(64, 64), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])]),
]
data = dict(train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline))
