"""The attack methods on a tiny, real, differentiable detector-like loss (CPU, pure torch)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ikd_cli.attack.methods import (ATTACKS, DIFGSM, MDIFGSM, TIFGSM, VMIFGSM, BoxAffine, build_attack,
                             gaussian_kernel, input_diversity, to_uint8)
from ikd_cli.core.errors import IkdError

H, W = 32, 48


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest and steady


class ToyDetectorLoss:
    """A fixed random conv net on normalised pixels; features are average-pooled inside each
    image's gt box (moved by the BoxAffine when input diversity moved the image) and classified;
    the loss is the summed cross-entropy against the gt label, like the teacher's loss_cls."""

    def __init__(self, boxes, labels, num_classes=5):
        gen = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.boxes = boxes.float()
        self.labels = labels
        self.mean = torch.tensor([103.5, 116.3, 123.7]).view(1, 3, 1, 1)
        self.std = torch.tensor([57.4, 57.1, 58.4]).view(1, 3, 1, 1)
        self.affines = []

    def parameters(self):
        return list(self.net.parameters()) + list(self.head.parameters())

    def __call__(self, x, box_affine=None):
        self.affines.append(box_affine)
        feats = self.net((x - self.mean) / self.std)
        boxes = self.boxes if box_affine is None else box_affine.apply(self.boxes)
        ys = torch.arange(x.shape[2], dtype=torch.float32) + 0.5
        xs = torch.arange(x.shape[3], dtype=torch.float32) + 0.5
        inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])
        inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])
        mask = (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]
        pooled = (feats * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1.0)
        return F.cross_entropy(self.head(pooled), self.labels, reduction="sum")


@pytest.fixture()
def problem():
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 256, (2, 3, H, W), generator=gen).float()
    x0[:, :, :3] = 0.0  # some pixels at the edges of the value range
    x0[:, :, -3:] = 255.0
    boxes = torch.tensor([[6.0, 5.0, 30.0, 26.0], [18.0, 8.0, 44.0, 30.0]])
    loss_fn = ToyDetectorLoss(boxes, torch.tensor([1, 3]))
    return x0, loss_fn


def assert_budget(x_adv, x0, eps):
    assert x_adv.shape == x0.shape and x_adv.is_floating_point()
    assert float((x_adv - x0).abs().max()) <= eps + 1e-4
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 255.0


@pytest.mark.parametrize("method", sorted(ATTACKS))
def test_budget_loss_up_and_no_param_grads(problem, method):
    x0, loss_fn = problem
    torch.manual_seed(0)
    attack = build_attack(method, loss_fn, eps=8, alpha=2, steps=5, N=5)
    x_adv = attack(x0)
    assert_budget(x_adv, x0, 8.0)
    on_disk = to_uint8(x_adv, x0, 8.0)
    assert on_disk.dtype == torch.uint8
    assert int((on_disk.int() - x0.int()).abs().max()) <= 8
    with torch.no_grad():
        before, after, after_disk = loss_fn(x0), loss_fn(x_adv), loss_fn(on_disk.float())
    assert float(after) > float(before) + 0.1, (method, float(before), float(after))
    assert float(after_disk) > float(before)
    assert all(p.grad is None for p in loss_fn.parameters())
    assert attack.losses and all(v == v for v in attack.losses)  # evaluated, no NaN


def test_to_uint8_exact_for_fractional_eps(problem):
    x0, _ = problem
    noisy = x0 + torch.empty_like(x0).uniform_(-3.5, 3.5)
    out = to_uint8(noisy, x0, 3.5)
    diff = (out.int() - x0.int()).abs()
    assert int(diff.max()) <= 3 and out.dtype == torch.uint8
    # values far outside the budget and the range are pulled back
    out = to_uint8(x0 + 100.0, x0, 2.0)
    assert int((out.int() - x0.int()).abs().max()) <= 2 and int(out.max()) <= 255


def test_random_start_and_determinism(problem):
    x0, loss_fn = problem
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(build_attack("pgd", loss_fn, random_start=True)(x0))
    assert torch.equal(outs[0], outs[1])
    assert_budget(outs[0], x0, 8.0)
    torch.manual_seed(7)
    a = build_attack("difgsm", loss_fn, diversity_prob=1.0)(x0)
    torch.manual_seed(7)
    b = build_attack("difgsm", loss_fn, diversity_prob=1.0)(x0)
    assert torch.equal(a, b)


def test_gradient_is_wrt_input_only(problem):
    x0, loss_fn = problem
    attack = build_attack("mifgsm", loss_fn)
    grad, value = attack.gradient(x0)
    assert grad.shape == x0.shape and not grad.requires_grad and float(grad.abs().sum()) > 0
    assert isinstance(value, float)
    assert all(p.grad is None for p in loss_fn.parameters())


def test_difgsm_passes_affine_to_loss(problem):
    x0, loss_fn = problem
    torch.manual_seed(0)
    DIFGSM(loss_fn, diversity_prob=1.0, steps=3)(x0)
    assert len(loss_fn.affines) == 3 and all(isinstance(a, BoxAffine) for a in loss_fn.affines)
    loss_fn.affines.clear()
    DIFGSM(loss_fn, diversity_prob=0.0, steps=2)(x0)
    assert loss_fn.affines == [None, None]
    loss_fn.affines.clear()
    MDIFGSM(loss_fn, diversity_prob=1.0, steps=2, m=3)(x0)
    assert len(loss_fn.affines) == 6
    loss_fn.affines.clear()
    VMIFGSM(loss_fn, steps=3, N=4)(x0)
    assert len(loss_fn.affines) == 3 + 2 * 4  # no variance after the last step


@pytest.mark.parametrize("seed", range(6))
def test_input_diversity_moves_boxes_with_the_image(seed):
    x = torch.zeros(1, 3, 60, 80)
    box = torch.tensor([[21.0, 13.0, 45.0, 37.0]])  # x1, y1, x2, y2 in pixel-edge coordinates
    x[:, :, 13:37, 21:45] = 255.0
    gen = torch.Generator().manual_seed(seed)
    out, affine = input_diversity(x, resize_rate=0.7, diversity_prob=1.0, generator=gen)
    assert out.shape == x.shape and isinstance(affine, BoxAffine)
    assert 0.7 <= affine.scale <= 1.0
    x1, y1, x2, y2 = affine.apply(box)[0].tolist()
    centres_y = torch.arange(60).float() + 0.5
    centres_x = torch.arange(80).float() + 0.5

    def region(a, b, c, d):
        my = (centres_y >= b) & (centres_y <= d)
        mx = (centres_x >= a) & (centres_x <= c)
        return my[:, None] & mx[None, :]

    inner = region(x1 + 1, y1 + 1, x2 - 1, y2 - 1)
    outer = region(x1 - 1, y1 - 1, x2 + 1, y2 + 1)
    img = out[0, 0]
    assert inner.sum() > 100
    assert torch.allclose(img[inner], torch.full_like(img[inner], 255.0), atol=1e-3)
    assert float(img[~outer].abs().max()) < 1e-3
    # the total brightness scales with the area: scale^2
    assert float(img.sum()) == pytest.approx(float(x[0, 0].sum()) * affine.scale ** 2, rel=0.08)


def test_input_diversity_identity_and_differentiable():
    x = torch.rand(2, 3, 20, 30) * 255
    same, affine = input_diversity(x, diversity_prob=0.0)
    assert same is x and affine is None
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(0)
    out, affine = input_diversity(xg, resize_rate=0.8, diversity_prob=1.0)
    assert affine is not None and out.shape == x.shape
    (grad,) = torch.autograd.grad(out.sum(), xg)
    assert float(grad.abs().sum()) > 0


def test_ti_kernel():
    k = gaussian_kernel(15, 3)
    assert k.shape == (15, 15)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(k, k.t()) and torch.allclose(k, k.flip(0)) and torch.allclose(k, k.flip(1))
    assert int(k.argmax()) == 7 * 15 + 7
    # smoothing keeps the shape and, away from the borders, the total
    ti = TIFGSM(None, kernel_len=5, nsig=2)
    g = torch.zeros(1, 3, 20, 20)
    g[0, :, 10, 10] = 1.0
    s = ti.smooth(g)
    assert s.shape == g.shape and float(s.sum()) == pytest.approx(3.0, abs=1e-5)
    assert TIFGSM(None).decay == 0.0


@pytest.mark.parametrize("options", [dict(eps=0), dict(eps=256), dict(eps=-1), dict(steps=0), dict(steps=2.5),
                                     dict(alpha=0), dict(resize_rate=0), dict(diversity_prob=1.5),
                                     dict(eps="8"), dict(eps=float("nan")), dict(m=0)])
def test_invalid_options(options):
    with pytest.raises(IkdError):
        build_attack("m_difgsm", None, **options)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(IkdError) as err:
        build_attack("cw", None)
    for name in ATTACKS:
        assert name in str(err.value)


def test_build_attack_ignores_options_of_other_methods():
    settings = dict(eps=4.0, alpha=1.0, steps=3, decay=1.0, resize_rate=0.9, diversity_prob=0.5,
                    random_start=False, kernel_len=7, nsig=3.0, beta=1.5, n=6)
    fgsm = build_attack("fgsm", None, **settings)
    assert fgsm.eps == 4.0 and fgsm.steps == 1
    vmi = build_attack("vmifgsm", None, **settings)
    assert vmi.N == 6 and vmi.beta == 1.5 and vmi.steps == 3
    ti = build_attack("TIFGSM", None, **settings)
    assert ti.kernel_len == 7 and ti.decay == 1.0
    assert build_attack("m-difgsm", None, m=None).m == 4
    assert build_attack("pgd", None, kernel_len=3).random_start is True


def test_preset_defaults_leave_per_method_defaults_to_the_methods():
    """The preset's attack section builds every method; where a method documents its own
    default (pgd's random start, tifgsm's decay), the preset does not override it."""
    from ikd_cli.config import presets

    from ikd_cli.config.schema import pixel_options

    options = {k: presets.load("shapes")["attack"][k] for k in pixel_options()}
    built = {name: build_attack(name, None, **options) for name in ATTACKS}
    assert built["pgd"].random_start is True and built["difgsm"].random_start is False
    assert built["tifgsm"].decay == 0.0 and built["difgsm"].decay == 1.0 and built["vmifgsm"].decay == 1.0
    assert built["m_difgsm"].m == 4 and build_attack("m_difgsm", None, **dict(options, m=2)).m == 2
    assert built["difgsm"].settings() == dict(method="difgsm", eps=8.0, alpha=2.0, steps=5, random_start=False,
                                              decay=1.0, resize_rate=0.9, diversity_prob=0.5)


def test_build_attack_refuses_what_no_attack_takes():
    # an option that is no attack's (a typo, or the set's storage settings) is an error, not
    # silently dropped
    with pytest.raises(IkdError, match="unknown attack option epz; the options are eps, alpha"):
        build_attack("difgsm", None, epz=4)
    with pytest.raises(IkdError, match="unknown attack options batch_size, out"):
        build_attack("difgsm", None, batch_size=2, out="x")
    with pytest.raises(IkdError, match=r"attack.steps must be an integer >= 1, got 2.5"):
        build_attack("pgd", None, steps=2.5)


def test_attack_defaults_are_the_schema_s():
    from ikd_cli.config.schema import SETTINGS

    built = {name: build_attack(name, None) for name in ATTACKS}
    for name, attack in built.items():
        for option, value in attack.settings().items():
            key = f"attack.{'n' if option == 'N' else option}"
            if option != "method" and SETTINGS[key].default is not None:
                assert value == SETTINGS[key].default or (name == "fgsm" and option in ("alpha", "steps")), (name, option)
