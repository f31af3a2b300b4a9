# Tiny CenterNet (mmdet's centernet_resnet18_140e_coco: CTResNetNeck deconvolutions, heatmap head
# whose loss is loss_center_heatmap, no classification loss) for the family matrix, with its own
# pipelines (RandomCenterCropPad; a test pipeline that scales by scale_factor, no Resize scale):
# ResNet-18 with 8 base channels, 32-16-8 deconvolutions, 8-channel head, 64 x 64 crops.
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'centernet', 'centernet_resnet18_140e_coco.py')
model = dict(
    backbone=dict(base_channels=8, init_cfg=None),
    neck=dict(in_channel=64, num_deconv_filters=(32, 16, 8)),
    bbox_head=dict(in_channel=8, feat_channel=8),
    test_cfg=dict(topk=20, max_per_img=20))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, color_type='color'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='RandomCenterCropPad', crop_size=(64, 64), ratios=(0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
         mean=[0, 0, 0], std=[1, 1, 1], to_rgb=True, test_pad_mode=None),
    dict(type='Resize', img_scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])
]
data = dict(train=dict(dataset=dict(pipeline=train_pipeline)))
