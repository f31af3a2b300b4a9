# Tiny YOLOX (mmdet's yolox_tiny_8x8_300e_coco: CSPDarknet, PAFPN, decoupled head, SimOTA) for the
# family matrix, with its OWN training pipeline (Mosaic, RandomAffine, MixUp, HSV, pad to square
# at 114) inside a MultiImageMixDataset, its test pipeline without Normalize, its optimizer
# (nesterov SGD, no decay on norms and biases) and custom hooks. CSPDarknet at widen 0.125
# (8..128 channels), a 16-channel neck and head, 64 x 64 images. The model itself resizes every
# batch to input_size: 96 x 96 here, so that the first iteration already runs on a batch resized
# by the model (as YOLOX does after every random_size_interval iterations).
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'yolox', 'yolox_tiny_8x8_300e_coco.py')
img_scale = (64, 64)
model = dict(
    input_size=(96, 96),
    random_size_range=(2, 3),
    random_size_interval=1,
    backbone=dict(deepen_factor=0.33, widen_factor=0.125),
    neck=dict(in_channels=[32, 64, 128], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16),
    test_cfg=dict(score_thr=0.001))
train_pipeline = [
    dict(type='Mosaic', img_scale=img_scale, pad_val=114.0),
    dict(type='RandomAffine', scaling_ratio_range=(0.5, 1.5), border=(-img_scale[0] // 2, -img_scale[1] // 2)),
    dict(type='MixUp', img_scale=img_scale, ratio_range=(0.8, 1.6), pad_val=114.0),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Resize', img_scale=img_scale, keep_ratio=True),
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=img_scale, flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
                     dict(type='DefaultFormatBundle'), dict(type='Collect', keys=['img'])])
]
data = dict(persistent_workers=False, train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline),
            test=dict(pipeline=test_pipeline))
