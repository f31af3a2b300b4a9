"""The Python API: the README's example runs as written (on the tiny settings), the functions
return what the commands write, and bad settings raise the commands' one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ikd_cli import api
from ikd_cli.config import presets
from ikd_cli.core.errors import IkdError

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path, tiny_sets, capsys):
    code = _readme_example()
    tiny = presets.parse_set(tiny_sets[1::2])
    tiny.update({"work_dir": str(tmp_path / "work"), "attack.out": str(tmp_path / "adv"), "attack.steps": 1,
                 "train.epochs": 1, "teacher.checkpoint": str(tmp_path / "work" / "teacher" / "latest.pth")})
    first = 'preset, settings = "shapes", {}'
    assert first in code, "the README example starts with the line this test replaces"
    exec(code.replace(first, f"preset, settings = 'shapes', {tiny!r}"), {})
    printed = capsys.readouterr().out
    ap = float(re.search(r"IKD student: ([\d.]+) AP", printed).group(1))
    written = json.loads((tmp_path / "work" / "distill" / "student_latest.eval-val.json").read_text())
    assert ap == pytest.approx(round(100 * written["bbox"]["AP"], 1))
    assert (tmp_path / "adv" / "attack.json").is_file()
    # a finished run called again returns its checkpoint without training
    again = api.distill("shapes", settings=tiny, dfa_until=8)
    assert again == tmp_path / "work" / "distill" / "student_latest.pth"


def test_api_refuses_unknown_and_bad_settings():
    with pytest.raises(IkdError, match="unknown setting 'epz' of attack"):
        api.load_preset("shapes", section="attack", epz=4)
    with pytest.raises(IkdError, match=r"attack.eps must be a number > 0 and <= 255, got 300"):
        api.load_preset("shapes", section="attack", eps=300)
    with pytest.raises(IkdError, match="distill.dfa_until must be an integer >= 0"):
        api.load_preset("shapes", {"distill.dfa_until": -1})
    tree = api.load_preset("shapes", {"train.seed": 3}, "distill", method="mgd")
    assert tree["distill"]["method"] == "mgd" and tree["train"]["seed"] == 3
