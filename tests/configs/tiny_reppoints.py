# A tiny RepPoints (moment, GN neck and head, deformable convs in the head) for tests of the
# reppoints code paths on the shapes data. Data settings come from the tiny Mask R-CNN config.
_base_ = './tiny_mask_rcnn.py'
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    _delete_=True,
    type='RepPointsDetector',
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=32, start_level=1,
              add_extra_convs='on_input', num_outs=5, norm_cfg=norm_cfg),
    bbox_head=dict(
        type='RepPointsHead', num_classes=4, in_channels=32, feat_channels=32, point_feat_channels=32,
        stacked_convs=1, num_points=9, gradient_mul=0.1, point_strides=[8, 16, 32, 64, 128],
        point_base_scale=4, norm_cfg=norm_cfg,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox_init=dict(type='SmoothL1Loss', beta=0.11, loss_weight=0.5),
        loss_bbox_refine=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0),
        transform_method='moment'),
    train_cfg=dict(
        init=dict(assigner=dict(type='PointAssigner', scale=4, pos_num=1), allowed_border=-1, pos_weight=-1,
                  debug=False),
        refine=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                  ignore_iof_thr=-1), allowed_border=-1, pos_weight=-1, debug=False)),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=20))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(96, 96), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
data = dict(train=dict(pipeline=train_pipeline))
evaluation = dict(interval=1, metric='bbox')
