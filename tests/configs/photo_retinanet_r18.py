# The shapes student (RetinaNet on a slim ResNet-18) for tests/test_real_photos.py. Only the test
# thresholds differ: a detector trained for two iterations on three photographs scores every box
# near the focal-loss prior (0.01), under the base config's 0.05, and would write no detection at
# all; COCOeval then never runs (`ikd evaluate` reports zeros without it). The number of classes
# comes from the preset (data.classes: auto -> COCO's 80).
_base_ = '../../configs/models/shapes_retinanet_r18.py'
model = dict(test_cfg=dict(score_thr=0.001, max_per_img=20))
