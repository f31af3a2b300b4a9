# Tiny SSD (mmdet's ssd300_coco: SSDNeck with its L2-normalised first level and extra layers,
# SSDHead with SSD anchors, hard negative mining) for the family matrix, with its own
# augmentation (Expand, MinIoURandomCrop, PhotoMetricDistortion, a RepeatDataset). The VGG-16 is
# swapped for a ResNet-18 with 8 base channels (as mmdet's SSDlite swaps it for MobileNetV2);
# the neck keeps l2_norm and its extra layers: 4 levels at strides 8-64 on 64 x 64 images (anchor
# sizes given, as SSDAnchorGenerator computes them only for 300 and 512).
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'ssd', 'ssd300_coco.py')
model = dict(
    backbone=dict(_delete_=True, type='ResNet', depth=18, base_channels=8, num_stages=4, out_indices=(1, 2),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
                  init_cfg=None),
    neck=dict(in_channels=(16, 32), out_channels=(16, 32, 16, 16), level_strides=(2, 2), level_paddings=(1, 1)),
    bbox_head=dict(in_channels=(16, 32, 16, 16),
                   anchor_generator=dict(input_size=64, strides=[8, 16, 32, 64], ratios=[[2], [2, 3], [2, 3], [2]],
                                         min_sizes=[10, 20, 32, 45], max_sizes=[20, 32, 45, 58])),
    test_cfg=dict(nms_pre=100, max_per_img=20))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[1, 1, 1], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=img_norm_cfg['mean'], to_rgb=img_norm_cfg['to_rgb'], ratio_range=(1, 4)),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', img_scale=(64, 64), keep_ratio=False),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(64, 64), flip=False,
         transforms=[dict(type='Resize', keep_ratio=False), dict(type='Normalize', **img_norm_cfg),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])
]
data = dict(train=dict(dataset=dict(pipeline=train_pipeline)), val=dict(pipeline=test_pipeline),
            test=dict(pipeline=test_pipeline))
