# Tiny YOLOv3 (mmdet's yolov3_mobilenetv2_320_300e_coco: MobileNetV2, YOLOV3Neck's detect
# blocks, grid assigner) for the family matrix, with its own augmentation (Expand,
# MinIoURandomCrop, PhotoMetricDistortion): MobileNetV2 at widen 0.25, 16-channel neck and head,
# no pretrained weights, 64 x 64 images (anchors scaled from 320 by 1/5).
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'yolo', 'yolov3_mobilenetv2_320_300e_coco.py')
model = dict(
    backbone=dict(widen_factor=0.25, init_cfg=None),
    neck=dict(in_channels=[80, 24, 8], out_channels=[16, 16, 16]),
    bbox_head=dict(in_channels=[16, 16, 16], out_channels=[16, 16, 16],
                   anchor_generator=dict(base_sizes=[[(44, 25), (26, 44), (53, 53)], [(7, 17), (20, 19), (12, 34)],
                                                     [(2, 3), (5, 7), (14, 8)]])),
    test_cfg=dict(nms_pre=100, max_per_img=20))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=img_norm_cfg['mean'], to_rgb=img_norm_cfg['to_rgb'], ratio_range=(1, 2)),
    dict(type='MinIoURandomCrop', min_ious=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9), min_crop_size=0.3),
    dict(type='Resize', img_scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(64, 64), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=32),
                     dict(type='DefaultFormatBundle'), dict(type='Collect', keys=['img'])])
]
data = dict(train=dict(dataset=dict(pipeline=train_pipeline)), val=dict(pipeline=test_pipeline),
            test=dict(pipeline=test_pipeline))
