"""The four feature distillers IKD adds to: CWD and PKD each equal a computation written here
(value and gradient), the method table is the only list of methods (a method added to it in a
fresh process is offered, built and labelled), the reference presets build each method with its
published weights, FGD's and MGD's losses are unchanged, and a tiny real distillation runs both
stages with CWD and with PKD."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mmdet")

import torch.nn.functional as F  # noqa: E402
from mmdet.models.builder import build_loss  # noqa: E402

from helpers import DEVICE, REPO, run_cli  # noqa: E402
from ikd_cli.config import presets  # noqa: E402
from ikd_cli.config.distillers import DISTILLERS  # noqa: E402
from ikd_cli.distill import losses as L  # noqa: E402
from ikd_cli.distill.config import build_distill_config, clean_loss  # noqa: E402


def _features(gen, s_ch, t_ch, s_size=(9, 7), t_size=(9, 7), n=2):
    preds_S = torch.randn(n, s_ch, *s_size, generator=gen, requires_grad=True)
    preds_T = torch.randn(n, t_ch, *t_size, generator=gen) * 3 + 1  # another scale and offset
    return preds_S, preds_T


def _aligned_by_hand(loss, preds_S):
    return F.conv2d(preds_S, loss.align.weight, loss.align.bias) if loss.align is not None else preds_S


def _check_against(loss, preds_S, preds_T, by_hand, rel: float) -> None:
    """The loss's value and its gradients (student features, align conv) equal ``by_hand``'s."""
    params = [preds_S] + ([loss.align.weight] if loss.align is not None else [])
    value, expected = loss(preds_S, preds_T), by_hand(loss, preds_S, preds_T)
    grads, grads_expected = torch.autograd.grad(value, params), torch.autograd.grad(expected, params)
    assert value.item() > 0 and value.item() == pytest.approx(expected.item(), rel=rel)
    # float32 sums in another order: gradients agree to a small share of their largest entry
    assert all(torch.allclose(g, e, rtol=10 * rel, atol=1e-4 * e.abs().max().item())
               for g, e in zip(grads, grads_expected))


# ------------------------------------------------------------------ CWD

def _cwd_by_hand(loss, preds_S, preds_T):
    """KL(p_t || p_s) channel by channel, with the positions of one channel as the distribution."""
    feat = _aligned_by_hand(loss, preds_S)
    n, c = preds_T.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            p_t = torch.softmax(preds_T[i, j].flatten() / loss.tau, dim=0)
            log_p_s = torch.log_softmax(feat[i, j].flatten() / loss.tau, dim=0)
            total = total + (p_t * (p_t.log() - log_p_s)).sum()
    return loss.alpha_cwd * loss.tau ** 2 * total / (n * c)


@pytest.mark.parametrize("s_ch,t_ch,tau", [(6, 6, 1.0), (4, 10, 2.0)])
def test_cwd_equals_a_computation_by_hand_value_and_gradient(s_ch, t_ch, tau):
    gen = torch.Generator().manual_seed(11)
    loss = build_loss(dict(type="CWDLoss", student_channels=s_ch, teacher_channels=t_ch, name="lvl", tau=tau,
                           alpha_cwd=5.0))
    assert isinstance(loss, L.CWDLoss) and (loss.align is None) == (s_ch == t_ch)
    preds_S, preds_T = _features(gen, s_ch, t_ch)
    _check_against(loss, preds_S, preds_T, _cwd_by_hand, rel=1e-5)
    same = build_loss(dict(type="CWDLoss", student_channels=t_ch, teacher_channels=t_ch, tau=tau))
    assert same(preds_T.clone(), preds_T).abs().item() < 1e-5  # a student equal to its teacher: 0


def test_cwd_and_ikds_cwd_variant_share_one_divergence():
    gen = torch.Generator().manual_seed(12)
    preds_S, preds_T = _features(gen, 5, 5)
    cwd = L.CWDLoss(5, 5, tau=3.0, alpha_cwd=2.0)
    adv = L.AdvFeatureLoss(5, 5, loss_type="cwd", alpha_adv=2.0, tau=3.0)
    assert cwd(preds_S, preds_T).item() == pytest.approx(adv(preds_S, preds_T).item(), rel=1e-6)


# ------------------------------------------------------------------ PKD

def _pkd_by_pearson(loss, preds_S, preds_T):
    """PKD through Pearson's r per channel: alpha * (M - 1) / M * (1 - mean_c r_c), with the
    student resized (bilinear) to the teacher's size and aligned to its channels."""
    feat = preds_S
    if feat.shape[-2:] != preds_T.shape[-2:]:
        feat = F.interpolate(feat, size=preds_T.shape[-2:], mode="bilinear", align_corners=False)
    feat = _aligned_by_hand(loss, feat)
    c = preds_T.shape[1]
    s = feat.transpose(0, 1).reshape(c, -1)
    t = preds_T.transpose(0, 1).reshape(c, -1)
    m = s.shape[1]
    r = torch.stack([torch.corrcoef(torch.stack([s[j], t[j]]))[0, 1] for j in range(c)])
    return loss.alpha_pkd * (m - 1) / m * (1 - r.mean())


@pytest.mark.parametrize("s_ch,t_ch,s_size", [(6, 6, (9, 7)), (4, 10, (9, 7)), (6, 6, (5, 4)), (3, 8, (18, 14))])
def test_pkd_equals_pearson_correlation_value_and_gradient(s_ch, t_ch, s_size):
    gen = torch.Generator().manual_seed(13)
    loss = build_loss(dict(type="PKDLoss", student_channels=s_ch, teacher_channels=t_ch, name="lvl", alpha_pkd=10.0))
    assert isinstance(loss, L.PKDLoss) and (loss.align is None) == (s_ch == t_ch)
    preds_S, preds_T = _features(gen, s_ch, t_ch, s_size=s_size)
    _check_against(loss, preds_S, preds_T, _pkd_by_pearson, rel=1e-4)


def test_pkd_ignores_scale_and_offset_and_handles_a_constant_channel():
    gen = torch.Generator().manual_seed(14)
    preds_T = torch.randn(2, 4, 6, 6, generator=gen)
    loss = L.PKDLoss(4, 4, alpha_pkd=1.0)
    assert loss(preds_T * 7 - 3, preds_T).item() == pytest.approx(0.0, abs=1e-6)  # r = 1 in every channel
    assert loss(-preds_T, preds_T).item() == pytest.approx(2 * 71 / 72, rel=1e-4)  # r = -1, M = 72
    flat = preds_T.clone()
    flat[:, 0] = 5.0  # a constant channel standardises to 0, not NaN
    assert torch.isfinite(loss(flat, preds_T))


# ------------------------------------------------------------------ FGD and MGD unchanged

def test_fgd_and_mgd_losses_unchanged_through_the_method_table():
    """The table's translation (distill.fgd.alpha -> alpha_fgd, ...) gives the loss the entries
    spelled out by hand gave before the table existed, to 1e-6."""
    preset = presets.load("retinanet")
    by_hand = {"fgd": dict(type="FGDLoss", temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
               "mgd": dict(type="MGDLoss", alpha_mgd=2e-5, lambda_mgd=0.65)}
    gen = torch.Generator().manual_seed(15)
    preds_S, preds_T = _features(gen, 8, 8, s_size=(12, 12), t_size=(12, 12))
    boxes = [torch.tensor([[8.0, 8.0, 60.0, 40.0]]), torch.tensor([[0.0, 0.0, 20.0, 90.0]])]
    metas = [dict(img_shape=(96, 96, 3), pad_shape=(96, 96, 3))] * 2
    for method, entry in by_hand.items():
        tree = presets.load("retinanet", {"distill.method": method})
        assert clean_loss(tree) == entry
        values = []
        for cfg in (clean_loss(tree), entry):
            torch.manual_seed(0)  # the losses' own init and MGD's mask
            loss = build_loss(dict(cfg, student_channels=8, teacher_channels=8))
            extra = (boxes, metas) if method == "fgd" else ()
            values.append(loss(preds_S, preds_T, *extra).item())
        assert values[0] == pytest.approx(values[1], rel=1e-6, abs=0) and values[0] > 0
    assert preset["distill"]["method"] == "fgd"


# ------------------------------------------------------------------ presets

@pytest.mark.parametrize("name,weights,levels", [
    ("retinanet", {"cwd": {"tau": 1.0, "alpha_cwd": 5.0}, "pkd": {"alpha_pkd": 10.0}}, 5),
    ("mask-rcnn", {"cwd": {"tau": 1.0, "alpha_cwd": 5.0}, "pkd": {"alpha_pkd": 6.0}}, 4),
    ("reppoints", {"cwd": {"tau": 1.0, "alpha_cwd": 5.0}, "pkd": {"alpha_pkd": 10.0}}, 5)])
def test_reference_presets_build_cwd_and_pkd_with_their_weights(name, weights, levels):
    fgd = build_distill_config(presets.load(name))
    for method, args in weights.items():
        cfg = build_distill_config(presets.load(name, {"distill.method": method}))
        clean, adv = cfg.model.losses
        assert clean == dict(type=DISTILLERS[method].loss, **args, image="clean",
                             levels=[f"neck.fpn_convs.{i}.conv" for i in range(levels)])
        assert adv == fgd.model.losses[1]  # IKD's adversarial feature loss: the same entry
        assert cfg.data.train_dfa.pipeline == fgd.data.train_dfa.pipeline and cfg.dfa_until == 16


def test_retinanet_cwd_and_pkd_distillers_build_from_mmdet_configs():
    import ikd_cli.distill.distiller  # noqa: F401
    from mmdet.models import build_detector

    for method, kind in (("cwd", "CWDLoss"), ("pkd", "PKDLoss")):
        cfg = build_distill_config(presets.load("retinanet", {"distill.method": method}))
        cfg.model.teacher_checkpoint = None
        cfg.model.student.backbone.init_cfg = None
        model = build_detector(cfg.model)
        kinds = [type(loss).__name__ for loss in model.distill_losses.values()]
        assert kinds == [kind] * 5 + ["AdvFeatureLoss"] * 5
        assert list(model.distill_losses)[0] == f"loss_{method}_neck_fpn_convs_0_conv"


# ------------------------------------------------------------------ the one list of methods

def test_a_method_added_to_the_table_is_offered_built_and_labelled(tmp_path):
    """In a fresh process, a distiller added to config/distillers.py's table (and its loss
    registered, as its loss file would) appears in `ikd distill --help`, is a valid
    distill.method with its weights checked, builds into the distiller, and is labelled in a
    report: nothing else lists the methods."""
    script = textwrap.dedent("""
        import sys
        from ikd_cli.config import distillers
        distillers.DISTILLERS["l2"] = distillers.Distiller(
            "L2TestLoss", "L2", "a test", {"alpha": distillers.Weight("weight", 3.0, "L2 weight", dict(low=0.0))})

        import torch
        from mmdet.models.builder import LOSSES

        @LOSSES.register_module()
        class L2TestLoss(torch.nn.Module):
            def __init__(self, name="", weight=1.0):
                super().__init__()
                self.weight = weight
            def forward(self, s, t):
                return self.weight * (s - t).pow(2).mean()

        from typer.testing import CliRunner
        from ikd_cli.cli import app
        out = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "200"}).output
        assert "<fgd|mgd|cwd|pkd|l2>" in out, out  # --method's choices

        from ikd_cli.config import presets
        from ikd_cli.core.errors import IkdError
        tree = presets.load("shapes", {"distill.method": "l2", "distill.l2.alpha": 0.5})
        try:
            presets.load("shapes", {"distill.l2.alpha": -1.0})
            raise SystemExit("a negative weight was accepted")
        except IkdError as err:
            assert "distill.l2.alpha" in str(err)

        from ikd_cli.distill.config import build_distill_config
        import ikd_cli.distill.distiller  # noqa: F401
        from mmdet.models import build_detector
        cfg = build_distill_config(tree)
        cfg.model.teacher_checkpoint = None
        model = build_detector(cfg.model)
        assert type(next(iter(model.distill_losses.values()))).__name__ == "L2TestLoss"
        assert next(iter(model.distill_losses.values())).weight == 0.5
        assert next(iter(model.distill_losses)) == "loss_l2_neck_fpn_convs_0_conv"

        from ikd_cli.report.runs import _default_arm
        assert _default_arm("shapes", "distill", "student", 0, "l2") == "shapes L2"
        assert _default_arm("shapes", "distill", "student", 8, "l2") == "shapes IKD (L2)"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


def test_no_other_module_lists_the_methods():
    """The methods' names appear as a list only in the table: no tuple or enum of them elsewhere."""
    import re

    pattern = re.compile(r"""["']fgd["']\s*,\s*["']mgd["']|fgd\s*=\s*["']fgd["']""")
    found = [str(p.relative_to(REPO)) for p in (REPO / "ikd_cli").rglob("*.py") if pattern.search(p.read_text())]
    assert found == []


# ------------------------------------------------------------------ end to end

@pytest.mark.parametrize("method", ["cwd", "pkd"])
def test_cwd_and_pkd_distil_both_stages(method, trained_teacher, tiny_sets, tiny_adv_set, tmp_path):
    result = run_cli("distill", "--preset", "shapes", "--work-dir", str(tmp_path), "--device", DEVICE, *tiny_sets,
                     "--set", f"teacher.checkpoint={trained_teacher}", "--set", f"attack.out={tiny_adv_set}",
                     "--set", "attack.steps=1", "--method", method, "--epochs", "2", "--dfa-until", "1",
                     "--set", "train.eval_interval=0")
    label = DISTILLERS[method].label
    assert f"epoch 1: stage 1: {label} + IKD augmentation" in result.output
    assert f"epoch 2: stage 2: plain {label}" in result.output
    log = (tmp_path / "distill" / "train.log").read_text()
    lines = {e: [ln for ln in log.splitlines() if f"Epoch [{e}]" in ln and f"loss_{method}_neck" in ln] for e in (1, 2)}
    assert lines[1] and all("loss_adv_neck_fpn_convs_0_conv" in ln for ln in lines[1])
    assert lines[2] and all("loss_adv" not in ln for ln in lines[2])
    assert "loss_fgd" not in log and (tmp_path / "distill" / "student_latest.pth").is_file()
