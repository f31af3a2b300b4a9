# Tiny Faster R-CNN (mmdet's faster_rcnn_r50_fpn_1x_coco: RPN, RoIAlign, shared 2-fc box head;
# its FPN has four levels of fpn_convs and a max-pooled fifth) for the family matrix: ResNet-18
# with 8 base channels, 16-channel FPN, RPN and RoI head, no pretrained weights, 64 x 64 images.
import os.path as _p
import mmdet as _m
_base_ = _p.join(_p.dirname(_m.__file__), '.mim', 'configs', 'faster_rcnn', 'faster_rcnn_r50_fpn_1x_coco.py')
model = dict(
    backbone=dict(depth=18, base_channels=8, frozen_stages=-1, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                  bbox_head=dict(in_channels=16, fc_out_channels=32)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)))
# its own pipelines, at 64 x 64 (the test's preset sets data.img_scale)
