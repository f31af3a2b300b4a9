"""Checkpoints are read as data. A pickle that would run code, and config text that mmcv would
run, are refused in one line unless trusted on purpose (--trust-checkpoint); what mmcv 1.7's
runner, the model zoo and ikd write still loads, resumes included. Real files, real processes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import IKD_EXE, run_cli


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _payload_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"epoch": 1, "iter": 1, "x": _Payload(marker)}}, path)
    return path


def _ikd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([IKD_EXE, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _refused_in_one_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # one error line, the last (a run may have printed its banner before it read the checkpoint)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stdout.strip().endswith(errors[0]), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def ikd_run(tmp_path_factory, tiny_sets) -> Path:
    """A 2-epoch teacher run written by `ikd train` (its folder)."""
    work = tmp_path_factory.mktemp("ckpt-run")
    run_cli("train", "--preset", "shapes", "--model", "teacher", "--work-dir", work, "--device", "cpu",
            *tiny_sets, "--set", "train.epochs=2", "--set", "train.eval_interval=0")
    return work / "teacher"


@pytest.mark.parametrize("command", ["evaluate", "attack", "distill"])
def test_pickle_payload_is_refused_and_never_runs(command, tmp_path, tiny_sets):
    marker = tmp_path / "pwned"
    evil = _payload_checkpoint(tmp_path / "evil.pth", marker)
    if command == "evaluate":
        args = ["evaluate", evil]
    else:
        out = ["--out", tmp_path / "adv"] if command == "attack" else ["--work-dir", tmp_path / "w", "--dfa-until", "0"]
        args = [command, "--preset", "shapes", "--device", "cpu", *tiny_sets, "--set", f"teacher.checkpoint={evil}",
                *out]
    _refused_in_one_line(_ikd(*args), str(evil), "posix.system", "--trust-checkpoint")
    assert not marker.exists()


def test_trust_checkpoint_runs_the_pickle_on_purpose(tmp_path, monkeypatch):
    from ikd_cli.core.checkpoints import TRUST_ENV, read_checkpoint, trust_checkpoints

    marker = tmp_path / "trusted"
    evil = _payload_checkpoint(tmp_path / "evil.pth", marker)
    # on the command line: the file is unpickled in full (it then has no config: one line)
    _refused_in_one_line(_ikd("evaluate", evil, "--trust-checkpoint"), "carries no config")
    assert marker.exists()
    marker.unlink()
    # the Python API, without any preset: per call, or for the process and those it starts
    read_checkpoint(evil, trust=True)
    assert marker.exists()
    marker.unlink()
    monkeypatch.delenv(TRUST_ENV, raising=False)
    trust_checkpoints()
    read_checkpoint(evil)
    assert marker.exists() and os.environ[TRUST_ENV] == "1"
    trust_checkpoints(False)
    with pytest.raises(Exception, match="refused"):
        read_checkpoint(evil)


def _copy_run(ikd_run: Path, tmp_path: Path) -> Path:
    """A copy of the run, continued below with `ikd train --work-dir` (`ikd resume` would go to
    the work dir recorded in the run's preset: the original)."""
    run = tmp_path / "w" / "teacher"
    shutil.copytree(ikd_run, run, symlinks=True)
    return run


def _train_again(tmp_path: Path, tiny_sets) -> list:
    return ["train", "--preset", "shapes", "--model", "teacher", "--work-dir", tmp_path / "w", "--device", "cpu",
            *tiny_sets, "--set", "train.epochs=2", "--set", "train.eval_interval=0"]


def test_resume_from_a_planted_checkpoint_is_refused(ikd_run, tmp_path, tiny_sets):
    run = _copy_run(ikd_run, tmp_path)
    marker = tmp_path / "pwned"
    (run / "latest.pth").unlink()
    _payload_checkpoint(run / "latest.pth", marker)
    _refused_in_one_line(_ikd(*_train_again(tmp_path, tiny_sets)), "posix.system", "--trust-checkpoint")
    assert not marker.exists()


def test_ikd_checkpoint_loads_as_data_and_resumes(ikd_run, tmp_path, tiny_sets):
    """An ikd checkpoint holds nothing torch's restricted unpickler refuses, and a run stopped
    after epoch 1 resumes from it (through the runner's resume, which does not run meta.config)."""
    from ikd_cli.core.checkpoints import read_checkpoint

    for path in ikd_run.glob("*.pth"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
    run = _copy_run(ikd_run, tmp_path)
    # as if killed during epoch 2: only epoch 1 is saved
    (run / "epoch_2.pth").unlink()
    (run / "latest.pth").unlink()
    (run / "latest.pth").symlink_to("epoch_1.pth")
    ckpt = read_checkpoint(run / "latest.pth", trust=False)
    assert ckpt["meta"]["epoch"] == 1 and "optimizer" in ckpt and ckpt["meta"]["ikd_preset"]["name"] == "shapes"
    result = run_cli(*_train_again(tmp_path, tiny_sets))
    assert "after epoch 1 of 2" in result.output
    resumed = read_checkpoint(run / "epoch_2.pth", trust=False)
    # the meta records the config this process ran (the copy's work dir), not the one it resumed
    assert resumed["meta"]["epoch"] == 2 and f"work_dir = '{run}'" in resumed["meta"]["config"]


class _Toy(torch.nn.Module):
    """A tiny model with the train_step and test forward mmcv's runner and EvalHook call."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn = torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1)

    def train_step(self, data, optimizer):
        loss = self.bn(self.fc(data["x"])).pow(2).mean()
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data["x"]))

    def forward(self, x, return_loss=False):
        return list(self.fc(x).detach().numpy())


class _Scored(list):
    def evaluate(self, results, logger=None, **kwargs):
        return {"bbox_mAP": np.float64(0.5)}  # a numpy float, as some datasets' evaluate() returns


def _toy_runner(runner_cls, work_dir: Path, meta: dict, max_epochs: int):
    model = _Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    return runner_cls(model, optimizer=optimizer, work_dir=str(work_dir), logger=logging.getLogger("toy"),
                      meta=meta, max_epochs=max_epochs)


def _mmcv_runner_checkpoints(work_dir: Path, config_text: str) -> Path:
    """Two epochs of a toy model through mmcv 1.7's own EpochBasedRunner, CheckpointHook and
    EvalHook (save_best), with the meta mmdet's train_detector gives it. Returns the work dir."""
    from mmcv.runner import EpochBasedRunner, EvalHook
    from torch.utils.data import DataLoader

    runner = _toy_runner(EpochBasedRunner, work_dir, max_epochs=2,
                         meta=dict(env_info="sys.platform: linux", config=config_text, seed=0, exp_name="toy.py"))
    runner.register_training_hooks(lr_config=dict(policy="step", step=[1]), optimizer_config=dict(grad_clip=None),
                                   checkpoint_config=dict(interval=1, meta=dict(mmdet_version="2.28.2",
                                                                                CLASSES=("a", "b"))),
                                   log_config=dict(interval=1, hooks=[]))
    data = [dict(x=torch.ones(2) * i) for i in range(4)]
    # test_fn: mmcv's default draws a progress bar on the sys.stdout it saw when first imported
    # (under CliRunner, a closed capture)
    runner.register_hook(EvalHook(DataLoader(_Scored(data), batch_size=2), save_best="auto", rule="greater",
                                  test_fn=lambda model, loader: [r for d in loader for r in model(**d)]),
                         priority="LOW")
    runner.run([DataLoader(data, batch_size=2)], [("train", 1)])
    return work_dir


def test_mmcv_runner_checkpoints_load_and_resume_without_running_their_config(tmp_path):
    from ikd_cli.core.checkpoints import read_checkpoint
    from ikd_cli.train.runner import IKDEpochBasedRunner

    marker = tmp_path / "config-ran"
    config_text = f"import os\nos.system('touch {marker}')\ngpu_ids = [0, 1]\n"
    work = _mmcv_runner_checkpoints(tmp_path / "mmcv", config_text)
    for name in ("epoch_1.pth", "epoch_2.pth", "latest.pth", "best_bbox_mAP_epoch_1.pth"):
        ckpt = read_checkpoint(work / name, trust=False)
        assert ckpt["meta"]["mmcv_version"] == "1.7.2" and ckpt["meta"]["exp_name"] == "toy.py"
        assert ckpt["optimizer"]["state"] and ckpt["meta"]["config"] == config_text
    assert float(ckpt["meta"]["hook_msgs"]["best_score"]) == 0.5
    assert read_checkpoint(work / "epoch_2.pth")["meta"]["CLASSES"] == ("a", "b")  # CheckpointHook's meta

    runner = _toy_runner(IKDEpochBasedRunner, tmp_path / "again", meta=dict(config="own = 1\n"), max_epochs=3)
    model = runner.model
    runner.resume(str(work / "latest.pth"))
    saved = torch.load(work / "latest.pth", weights_only=False)
    assert (runner.epoch, runner.iter) == (2, 4)  # not rescaled by the config's gpu_ids: it was never run
    assert runner.meta["config"] == "own = 1\n" and runner.meta["hook_msgs"]["best_ckpt"].endswith("epoch_1.pth")
    assert torch.equal(model.fc.weight, saved["state_dict"]["fc.weight"])
    momentum = saved["optimizer"]["state"][0]["momentum_buffer"]
    assert runner.optimizer.state_dict()["state"][0]["momentum_buffer"].equal(momentum)
    assert not marker.exists()


def test_zoo_format_checkpoint_loads_and_its_config_text_is_not_run(ikd_run, tmp_path, tiny_sets):
    """The model zoo's files: the old (non-zip) torch format, no optimizer, mmdet's meta with the
    config as Python text. The weights load; the text runs only when trusted."""
    marker = tmp_path / "config-ran"
    state = torch.load(ikd_run / "latest.pth", weights_only=True)["state_dict"]
    meta = dict(env_info="sys.platform: linux", config=f"import os\nos.system('touch {marker}')\n", seed=0,
                exp_name="retinanet.py", mmdet_version="2.28.2", CLASSES=("circle", "square", "triangle", "cross"),
                epoch=12, iter=1000, mmcv_version="1.3.17", time="Thu Jan 30 00:00:00 2020", hook_msgs={})
    zoo = tmp_path / "teacher_20200130-00000000.pth"
    torch.save({"meta": meta, "state_dict": state}, zoo, _use_new_zipfile_serialization=False)
    _refused_in_one_line(_ikd("evaluate", zoo), "Python text", "--preset", "--trust-checkpoint")
    assert not marker.exists()
    result = run_cli("evaluate", zoo, "--preset", "shapes", "--model", "teacher", "--device", "cpu", *tiny_sets)
    assert "AP50" in result.output and not marker.exists()
