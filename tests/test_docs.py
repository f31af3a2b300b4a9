"""The documentation: the docs site builds with every page in its nav and every link and anchor
found (``mkdocs build --strict``), the generated references (``docs/cli.md``, ``docs/settings.md``)
are what the code generates now, the layout in ``docs/extending.md`` names every module, and the
README stays a front page."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

from helpers import REPO


def _gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "scripts" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_references_are_current():
    for rel, text in _gen_reference().generated().items():
        on_disk = (REPO / rel).read_text(encoding="utf-8") if (REPO / rel).is_file() else ""
        assert on_disk == text, f"{rel} differs from what the code generates: run `python scripts/gen_reference.py`"


def test_generated_references_name_every_command_and_setting():
    from typer.main import get_command

    import ikd_cli.cli as cli
    from ikd_cli.config import schema

    cli_md = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    root = get_command(cli.app)
    for name, command in root.commands.items():
        assert f"`ikd {name}`" in cli_md
        for sub in getattr(command, "commands", {}):
            assert f"`ikd {name} {sub}`" in cli_md
    settings_md = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    keys = list(schema.SETTINGS) + [f"data.shapes.{k}" for k in schema.SHAPES]
    missing = [k for k in keys if f"| `{k}` |" not in settings_md]
    assert not missing, f"settings.md lacks {missing}"


def test_docs_site_builds_strict(tmp_path):
    """A broken link or anchor, or a page left out of mkdocs.yml's nav, fails the build."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                          str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"mkdocs build --strict failed (mkdocs and mkdocs-material come with " \
                                f"scripts/install.sh):\n{out.stdout}\n{out.stderr}"
    site = tmp_path / "site"
    assert (site / "cli" / "index.html").is_file() and (site / "results" / "sweep" / "index.html").is_file()


def test_layout_block_names_every_module():
    text = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    block = re.search(r"```\nikd_cli/\n(.*?)```", text, re.S).group(1)
    named = set(re.findall(r"[\w]+\.py", block))
    modules = {p.name for p in (REPO / "ikd_cli").rglob("*.py") if p.name != "__init__.py"}
    assert not modules - named, f"docs/extending.md's layout lacks {sorted(modules - named)}"
    assert not named - modules, f"docs/extending.md's layout names modules that do not exist: {sorted(named - modules)}"


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move the detail to docs/ or results/"
    text = "\n".join(lines)
    assert "bash scripts/run_shapes.sh" in text and "bash scripts/test.sh" in text
    # the site does not hold the README (GitHub shows it): its relative links are checked here
    broken = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", text)
              if "://" not in t and not (REPO / t).exists()]
    assert not broken, f"README.md links to files that do not exist: {broken}"
