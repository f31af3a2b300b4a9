"""The distillation losses (FGD, IKD adversarial feature loss): registry, masks, values, gradients."""

from __future__ import annotations

import math

import pytest

from ikd_cli.core.errors import IkdError

torch = pytest.importorskip("torch")
pytest.importorskip("mmdet")

from mmdet.models.builder import LOSSES, build_loss  # noqa: E402

from helpers import foreground_mask_loop  # noqa: E402
from ikd_cli.distill import losses as L  # noqa: E402


def _metas(n, img_h, img_w, pad_h=None, pad_w=None):
    pad_h, pad_w = pad_h or img_h, pad_w or img_w
    return [dict(img_shape=(img_h, img_w, 3), pad_shape=(pad_h, pad_w, 3)) for _ in range(n)]


def _random_boxes(gen, k, img_h, img_w):
    """k random xyxy boxes inside the image: big, small, sub-cell, touching the border."""
    if k == 0:
        return torch.zeros(0, 4)
    x1 = torch.rand(k, generator=gen) * img_w
    y1 = torch.rand(k, generator=gen) * img_h
    scale = torch.rand(k, generator=gen) ** 3  # mostly small, some large
    x2 = (x1 + scale * img_w).clamp(max=img_w)
    y2 = (y1 + scale * img_h).clamp(max=img_h)
    boxes = torch.stack([x1, y1, x2, y2], dim=1)
    # a few special ones
    boxes[0] = torch.tensor([0.0, 0.0, img_w, img_h])  # whole image, touches every border
    if k > 1:
        boxes[1] = torch.tensor([img_w - 0.5, img_h - 0.5, img_w, img_h])  # tiny, bottom-right corner
    if k > 2:
        boxes[2] = torch.tensor([3.1, 5.2, 3.3, 5.4])  # sub-cell
    if k > 3:
        boxes[3] = boxes[4 % k].clone()  # exact duplicate (overlap)
    return boxes


# ------------------------------------------------------------------ registry

def test_registry_builds_both_losses():
    assert "FGDLoss" in LOSSES.module_dict and "AdvFeatureLoss" in LOSSES.module_dict
    fgd = build_loss(dict(type="FGDLoss", student_channels=8, teacher_channels=16,
                          name="neck.fpn_convs.0.conv", temp=0.5, alpha_fgd=1.6e-3))
    assert isinstance(fgd, L.FGDLoss)
    assert fgd.alpha_fgd == pytest.approx(1.6e-3) and fgd.name == "neck.fpn_convs.0.conv"
    assert fgd.align.in_channels == 8 and fgd.align.out_channels == 16
    adv = build_loss(dict(type="AdvFeatureLoss", student_channels=8, teacher_channels=8, name="x",
                          loss_type="l1", alpha_adv=2.5e-7))
    assert isinstance(adv, L.AdvFeatureLoss) and adv.align is None and adv.loss_type == "l1"


# ------------------------------------------------------------------ masks

@pytest.mark.parametrize("H,W", [(5, 7), (16, 16), (13, 21), (1, 1), (50, 84)])
def test_vectorised_mask_matches_loop(H, W):
    gen = torch.Generator().manual_seed(H * 100 + W)
    img_h, img_w = 8 * H - 3, 8 * W + 5  # not a multiple of the map: fractional scales
    counts = [0, 1, 3, 17, 60]
    boxes = [_random_boxes(gen, k, img_h, img_w) for k in counts]
    metas = _metas(len(counts), img_h, img_w)
    vec = L.foreground_mask(boxes, metas, H, W)
    loop = foreground_mask_loop(boxes, metas, H, W)
    assert vec.shape == (len(counts), H, W)
    torch.testing.assert_close(vec, loop, rtol=1e-5, atol=0)
    assert torch.all(vec[0] == 0)  # no boxes
    assert bool((vec[1:] > 0).all())  # box 0 covers the whole map
    # the background mask of the empty image is uniform and sums to 1; covered images have none
    bg = L.background_mask(vec)
    assert bg[0].sum().item() == pytest.approx(1.0)
    assert torch.all(bg[1:] == 0)


def test_vectorised_mask_chunking_and_partial_cover(monkeypatch):
    # several chunks of boxes (budget shrunk to 7 boxes a chunk), none covering the whole image
    gen = torch.Generator().manual_seed(7)
    H, W, img_h, img_w = 25, 38, 200, 300
    monkeypatch.setattr("ikd_cli.distill.losses.masks._MASK_BUDGET_CPU", 7 * H * W)
    b = _random_boxes(gen, 60, img_h, img_w)[1:]
    b = b[(b[:, 2] - b[:, 0]) < img_w / 4]
    boxes = [b, b[:10]]
    metas = _metas(2, img_h, img_w)
    vec = L.foreground_mask(boxes, metas, H, W)
    torch.testing.assert_close(vec, foreground_mask_loop(boxes, metas, H, W), rtol=1e-5, atol=0)
    bg = L.background_mask(vec)
    for i in range(2):
        assert (bg[i] > 0).any()
        assert bg[i].sum().item() == pytest.approx(1.0, rel=1e-6)
        assert torch.all((bg[i] > 0) == (vec[i] == 0))


def test_single_box_hand_checked():
    # 64x64 image, 8x8 map: 8 px per cell. Box x 8..24 -> cells floor(1)..ceil(3) = 1..3 (inclusive);
    # y 16..20 -> cells floor(2)..ceil(2.5)=3 -> 2..3. 3 wide x 2 high = 6 cells of 1/6.
    boxes = [torch.tensor([[8.0, 16.0, 24.0, 20.0]])]
    metas = _metas(1, 64, 64)
    fg = L.foreground_mask(boxes, metas, 8, 8)
    expected = torch.zeros(1, 8, 8)
    expected[0, 2:4, 1:4] = 1 / 6
    torch.testing.assert_close(fg, expected)
    bg = L.background_mask(fg)
    assert torch.all(bg[0, 2:4, 1:4] == 0)
    torch.testing.assert_close(bg[0, 0, 0], torch.tensor(1 / 58))
    assert bg.sum().item() == pytest.approx(1.0)


def test_overlap_takes_max_and_border_is_clamped():
    # a big box and a small one inside it: the small one's (bigger) value wins where they overlap
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 7.0, 7.0], [60.0, 60.0, 64.0, 64.0]])]
    fg = L.foreground_mask(boxes, _metas(1, 64, 64), 8, 8)
    # big: cells 0..4 x 0..4 (25 cells); small: 0..1 x 0..1 (4 cells); corner: floor(7.5)=7..ceil(8)=8,
    # painted on the one cell left after clamping but valued 1/(2*2) like the FGD reference
    assert fg[0, 0, 0].item() == pytest.approx(1 / 4)
    assert fg[0, 1, 1].item() == pytest.approx(1 / 4)
    assert fg[0, 2, 2].item() == pytest.approx(1 / 25)
    assert fg[0, 4, 4].item() == pytest.approx(1 / 25)
    assert fg[0, 5, 5].item() == 0
    assert fg[0, 7, 7].item() == pytest.approx(1 / 4)
    assert (fg > 0).sum().item() == 26


def test_mask_scales_with_img_shape_or_pad_shape():
    # img 48x64 padded to 64x64; 8x8 map. Box covering the bottom half of the real image.
    boxes = [torch.tensor([[0.0, 24.0, 64.0, 48.0]])]
    metas = _metas(1, 48, 64, pad_h=64, pad_w=64)
    fgd_img = L.FGDLoss(4, 4, "p")
    fgd_pad = L.FGDLoss(4, 4, "p", mask_shape="pad_shape")
    fg_img, _ = fgd_img.masks(boxes, metas, 8, 8)
    fg_pad, _ = fgd_pad.masks(boxes, metas, 8, 8)
    assert fg_img[0, 4:, :].gt(0).all() and fg_img[0, :4].eq(0).all()  # rows 4..8 clamped to 7
    assert fg_pad[0, 3:7, :].gt(0).all() and fg_pad[0, :3].eq(0).all() and fg_pad[0, 7].eq(0).all()


# ------------------------------------------------------------------ FGD loss

def _fgd_inputs(gen, n=2, c=8, h=12, w=10, stride=8):
    img_h, img_w = h * stride, w * stride
    boxes = [_random_boxes(gen, k, img_h, img_w)[1:] if k else torch.zeros(0, 4) for k in (6, 0, 3)[:n]]
    return boxes, _metas(n, img_h, img_w)


def test_fgd_zero_for_identical_features():
    gen = torch.Generator().manual_seed(0)
    boxes, metas = _fgd_inputs(gen)
    loss_fn = L.FGDLoss(8, 8, "p3")
    feat = torch.randn(2, 8, 12, 10, generator=gen)
    loss = loss_fn(feat.clone().requires_grad_(), feat.clone(), boxes, metas)
    assert loss.dim() == 0
    assert loss.item() == 0.0
    # the context blocks start at exactly zero (last channel_add conv zero-initialised)
    for ctx in (loss_fn.context_s, loss_fn.context_t):
        assert torch.all(ctx(feat) == 0)
        assert torch.all(ctx.channel_add[-1].weight == 0) and torch.all(ctx.channel_add[-1].bias == 0)
        assert torch.all(ctx.conv_mask.bias == 0) and ctx.conv_mask.weight.std() > 0


def test_fgd_positive_and_gradients():
    gen = torch.Generator().manual_seed(1)
    boxes, metas = _fgd_inputs(gen)
    loss_fn = L.FGDLoss(4, 8, "p3", lambda_fgd=1e-2)
    s = torch.randn(2, 4, 12, 10, generator=gen, requires_grad=True)
    t = torch.randn(2, 8, 12, 10, generator=gen, requires_grad=True)  # a careless caller's teacher
    loss = loss_fn(s, t, boxes, metas)
    assert loss.item() > 0
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss_fn.align.weight.grad is not None and loss_fn.align.weight.grad.abs().sum() > 0
    assert t.grad is None  # never backprop into the teacher
    # the context blocks learn (last conv gets gradient first)
    assert loss_fn.context_s.channel_add[-1].weight.grad.abs().sum() > 0
    assert loss_fn.context_t.channel_add[-1].weight.grad.abs().sum() > 0


def test_fgd_components_by_hand():
    """Each weight isolates one component; check them against a direct computation."""
    gen = torch.Generator().manual_seed(2)
    boxes, metas = _fgd_inputs(gen)
    s = torch.randn(2, 8, 12, 10, generator=gen)
    t = torch.randn(2, 8, 12, 10, generator=gen)
    temp = 0.5
    S_t, C_t = L.spatial_channel_attention(t, temp)
    S_s, C_s = L.spatial_channel_attention(s, temp)
    assert S_t.mean().item() == pytest.approx(1.0) and C_t.mean().item() == pytest.approx(1.0)
    fg = L.foreground_mask(boxes, metas, 12, 10)
    bg = L.background_mask(fg)
    w = (S_t[:, None] * C_t[:, :, None, None]).sqrt()
    fg_ref = ((s * w * fg[:, None].sqrt() - t * w * fg[:, None].sqrt()) ** 2).sum() / 2
    bg_ref = ((s * w * bg[:, None].sqrt() - t * w * bg[:, None].sqrt()) ** 2).sum() / 2
    att_ref = ((C_s - C_t).abs().sum() + (S_s - S_t).abs().sum()) / 2
    rela_ref = ((s - t) ** 2).sum() / 2  # contexts are zero at init

    def only(**kw):
        weights = dict(alpha_fgd=0.0, beta_fgd=0.0, gamma_fgd=0.0, lambda_fgd=0.0)
        weights.update(kw)
        return L.FGDLoss(8, 8, "p", temp=temp, **weights)(s, t, boxes, metas).item()

    assert only(alpha_fgd=1.0) == pytest.approx(fg_ref.item(), rel=1e-5)
    assert only(beta_fgd=1.0) == pytest.approx(bg_ref.item(), rel=1e-5)
    assert only(gamma_fgd=1.0) == pytest.approx(att_ref.item(), rel=1e-5)
    assert only(lambda_fgd=1.0) == pytest.approx(rela_ref.item(), rel=1e-5)
    total = L.FGDLoss(8, 8, "p")(s, t, boxes, metas).item()
    expected = 1e-3 * fg_ref + 5e-4 * bg_ref + 5e-4 * att_ref + 5e-6 * rela_ref
    assert total == pytest.approx(expected.item(), rel=1e-5)


def test_fgd_same_loss_with_loop_mask(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    img_h, img_w = 100, 160
    boxes = [_random_boxes(gen, k, img_h, img_w) for k in (40, 0, 5)]
    metas = _metas(3, img_h, img_w, 104, 160)
    s = torch.randn(3, 6, 13, 20, generator=gen)
    t = torch.randn(3, 6, 13, 20, generator=gen)
    loss_fn = L.FGDLoss(6, 6, "p")
    vec = loss_fn(s, t, boxes, metas)
    monkeypatch.setattr("ikd_cli.distill.losses.fgd.foreground_mask", foreground_mask_loop)
    loop = loss_fn(s, t, boxes, metas)
    assert vec.item() == loop.item()


def test_fgd_rejects_spatial_mismatch_and_bad_channels():
    loss_fn = L.FGDLoss(4, 4, "p")
    metas = _metas(1, 64, 64)
    with pytest.raises(ValueError, match="spatial sizes"):
        loss_fn(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 9), [torch.zeros(0, 4)], metas)
    with pytest.raises(ValueError, match="student_channels"):
        loss_fn(torch.randn(1, 5, 8, 8), torch.randn(1, 4, 8, 8), [torch.zeros(0, 4)], metas)
    with pytest.raises(ValueError, match="mask_shape"):
        L.FGDLoss(4, 4, "p", mask_shape="ori_shape")


# ------------------------------------------------------------------ adversarial feature loss

def test_adv_mse_and_l1_by_hand():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])  # (2, 1, 2, 2)
    t = torch.tensor([[[[1.0, 0.0], [3.0, 2.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    # squared diffs: 0+4+0+4 and 1+0+0+1 -> 10; /N=2 -> 5; abs diffs: 2+2 and 1+1 -> 6 -> 3
    mse = L.AdvFeatureLoss(1, 1, "p", loss_type="mse", alpha_adv=1e-5)(s, t)
    l1 = L.AdvFeatureLoss(1, 1, "p", loss_type="l1", alpha_adv=2.0)(s, t)
    assert mse.item() == pytest.approx(5e-5)
    assert l1.item() == pytest.approx(6.0)


def test_adv_cwd():
    gen = torch.Generator().manual_seed(4)
    t = torch.randn(2, 3, 5, 4, generator=gen)
    s = torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True)
    cwd = L.AdvFeatureLoss(3, 3, "p", loss_type="cwd", alpha_adv=1.0, tau=2.0)
    assert cwd(t.clone(), t).abs().item() < 1e-6
    loss = cwd(s, t)
    assert loss.item() > 0
    # direct computation: KL(p_t || p_s) per (n, c) over H*W, tau^2, / (N*C)
    p_t = torch.softmax(t.reshape(6, 20) / 2.0, dim=1)
    p_s = torch.softmax(s.detach().reshape(6, 20) / 2.0, dim=1)
    ref = (p_t * (p_t.log() - p_s.log())).sum() * 4.0 / 6
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert s.grad.abs().sum() > 0


def test_adv_align_conv_and_gradients():
    gen = torch.Generator().manual_seed(5)
    adv = L.AdvFeatureLoss(4, 16, "p")
    assert tuple(adv.align.weight.shape) == (16, 4, 1, 1)
    s = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
    t = torch.randn(2, 16, 6, 6, generator=gen, requires_grad=True)
    loss = adv(s, t)
    loss.backward()
    assert loss.item() > 0 and s.grad.abs().sum() > 0 and adv.align.weight.grad.abs().sum() > 0
    assert t.grad is None
    assert L.AdvFeatureLoss(4, 4, "p").align is None
    with pytest.raises(ValueError, match="channels"):
        adv(torch.randn(2, 4, 6, 6), torch.randn(2, 8, 6, 6))


def test_adv_invalid_type_raises():
    with pytest.raises(IkdError, match="distill.adv_loss must be one of mse, l1, cwd"):
        L.AdvFeatureLoss(4, 4, "p", loss_type="kl")
    with pytest.raises(IkdError, match="distill.adv_loss"):
        build_loss(dict(type="AdvFeatureLoss", student_channels=4, teacher_channels=4, loss_type="huber"))


def test_losses_are_finite_for_large_features():
    # FPN outputs can be large; the float32 maths must not overflow
    gen = torch.Generator().manual_seed(6)
    s = (torch.randn(1, 8, 10, 10, generator=gen) * 100).half()
    t = (torch.randn(1, 8, 10, 10, generator=gen) * 100).half()
    boxes, metas = [torch.tensor([[0.0, 0.0, 40.0, 40.0]])], _metas(1, 80, 80)
    assert math.isfinite(L.FGDLoss(8, 8, "p")(s, t, boxes, metas).item())
    assert math.isfinite(L.AdvFeatureLoss(8, 8, "p")(s, t).item())


# ------------------------------------------------------------------ MGD

def _mgd_by_hand(loss, preds_S, preds_T, mask):
    """MGD written out with functional convs on the module's own weights (align, generation)."""
    import torch.nn.functional as F

    feat = preds_S
    if loss.align is not None:
        feat = F.conv2d(feat, loss.align.weight, loss.align.bias)
    g1, g2 = loss.generation[0], loss.generation[2]
    rebuilt = F.conv2d(F.relu(F.conv2d(feat * mask, g1.weight, g1.bias, padding=1)), g2.weight, g2.bias, padding=1)
    n = preds_T.shape[0]
    return loss.alpha_mgd * ((rebuilt - preds_T) ** 2).sum() / n


@pytest.mark.parametrize("s_ch,t_ch", [(8, 8), (6, 10)])
def test_mgd_equals_a_hand_computation_value_and_gradient(s_ch, t_ch):
    gen = torch.Generator().manual_seed(3)
    loss = build_loss(dict(type="MGDLoss", student_channels=s_ch, teacher_channels=t_ch, name="lvl",
                           alpha_mgd=2e-2, lambda_mgd=0.65))
    assert isinstance(loss, L.MGDLoss) and (loss.align is None) == (s_ch == t_ch)
    if loss.align is not None:
        assert (loss.align.in_channels, loss.align.out_channels) == (s_ch, t_ch)
    assert loss.generation[0].in_channels == loss.generation[2].out_channels == t_ch
    preds_S = torch.randn(2, s_ch, 9, 7, generator=gen, requires_grad=True)
    preds_T = torch.randn(2, t_ch, 9, 7, generator=gen)
    mask = (torch.rand(2, 1, 9, 7, generator=gen) > 0.65).float()
    value = loss(preds_S, preds_T, mask=mask)
    (grad,) = torch.autograd.grad(value, preds_S)
    S2 = preds_S.detach().clone().requires_grad_(True)
    expected = _mgd_by_hand(loss, S2, preds_T, mask)
    (grad_expected,) = torch.autograd.grad(expected, S2)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5) and value.item() > 0
    assert torch.allclose(grad, grad_expected, rtol=1e-4, atol=1e-8)
    # A masked-out pixel sends no gradient into the student (before the 1x1 align, pixel-wise).
    dropped = mask[:, 0] == 0
    assert dropped.any() and torch.all(grad.permute(0, 2, 3, 1)[dropped] == 0)
    assert preds_T.grad is None


def test_mgd_mask_is_seeded_and_drops_lambda_of_the_pixels():
    torch.manual_seed(11)
    a = L.random_pixel_mask(4, 64, 64, 0.65)
    torch.manual_seed(11)
    b = L.random_pixel_mask(4, 64, 64, 0.65)
    c = L.random_pixel_mask(4, 64, 64, 0.65)  # the generator moved on
    assert a.shape == (4, 1, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert 1 - a.mean().item() == pytest.approx(0.65, abs=0.01)  # 16384 draws: sd 0.004
    # The random draw inside forward is the same seeded draw.
    loss = L.MGDLoss(4, 4, alpha_mgd=1.0)
    S, T = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    torch.manual_seed(5)
    drawn = loss(S, T)
    torch.manual_seed(5)
    assert drawn.item() == pytest.approx(loss(S, T, mask=L.random_pixel_mask(2, 5, 5, 0.65)).item(), rel=1e-6)


def test_mgd_rejects_bad_settings_and_shapes():
    with pytest.raises(IkdError, match=r"distill.mgd.lambda must be a number >= 0 and < 1"):
        L.MGDLoss(4, 4, lambda_mgd=1.0)
    loss = L.MGDLoss(4, 8)
    with pytest.raises(ValueError, match="student features have 3 channels"):
        loss(torch.randn(1, 3, 4, 4), torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="the mask must be"):
        loss(torch.randn(1, 4, 4, 4), torch.randn(1, 8, 4, 4), mask=torch.ones(1, 1, 2, 2))
