# Tiny DETR (mmdet's detr_r50_8x2_150e_coco: a transformer head on the backbone's last stage, no
# neck, Hungarian matching) for the family matrix, with its own pipeline (AutoAugment between
# multi-scale resizes and resize-crop-resize) and optimizer (AdamW, backbone lr x0.1, gradient
# clip 0.1): ResNet-18 with 8 base channels, one 16-wide encoder and decoder layer, 10 queries,
# no pretrained weights, 64 x 64 images.
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'detr', 'detr_r50_8x2_150e_coco.py')
_attn = dict(type='MultiheadAttention', embed_dims=16, num_heads=2, dropout=0.1)
# mmcv's FFN defaults to 256 channels: the tiny width is said once more for it
_ffn = dict(type='FFN', embed_dims=16, feedforward_channels=32, num_fcs=2, ffn_drop=0.1,
            act_cfg=dict(type='ReLU', inplace=True))
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=-1, init_cfg=None),
    bbox_head=dict(
        num_query=10, in_channels=64,
        transformer=dict(
            encoder=dict(num_layers=1, transformerlayers=dict(attn_cfgs=[_attn], ffn_cfgs=_ffn)),
            decoder=dict(num_layers=1, transformerlayers=dict(attn_cfgs=_attn, ffn_cfgs=_ffn))),
        positional_encoding=dict(num_feats=8)),
    test_cfg=dict(max_per_img=10))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='AutoAugment',
         policies=[[dict(type='Resize', img_scale=[(48, 64), (56, 64), (64, 64)], multiscale_mode='value',
                         keep_ratio=True)],
                   [dict(type='Resize', img_scale=[(64, 48), (64, 56)], multiscale_mode='value', keep_ratio=True),
                    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(32, 48), allow_negative_crop=True),
                    dict(type='Resize', img_scale=[(48, 64), (56, 64), (64, 64)], multiscale_mode='value',
                         override=True, keep_ratio=True)]]),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=1),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(64, 64), flip=False,
         transforms=[dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
                     dict(type='Normalize', **img_norm_cfg), dict(type='Pad', size_divisor=1),
                     dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])
]
data = dict(train=dict(pipeline=train_pipeline), val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline))
