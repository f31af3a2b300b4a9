"""mkdocs hook (mkdocs.yml's ``hooks:``): the results pages join the site, and links between
``docs/`` and ``results/`` work both on GitHub and in the site.

The Markdown is written for the repository: a docs page links ``../results/sweep/README.md``, a
results page ``../../docs/concepts.md``, which is what GitHub follows. The site holds ``docs/`` at
its root and ``results/`` (its ``README.md`` pages and ``figures/``) under ``results/``, so such a
link is rewritten to the same file's place in the site before mkdocs checks it; a link that names
a file outside both stays as written, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
EXTRA = ("results/**/README.md", "results/figures/*.png")
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def on_files(files, config):
    for pattern in EXTRA:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def _site_path(repo_path: str):
    """Where a repository file lies in the site, or None when the site does not hold it."""
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/"):]
    if repo_path.startswith("results/"):
        return repo_path
    return None


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve()
    source = Path(page.file.abs_src_path).resolve()
    page_repo = ("docs/" + page.file.src_uri) if docs in source.parents else source.relative_to(ROOT).as_posix()
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match):
        target = match.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        site = _site_path(posixpath.normpath(posixpath.join(posixpath.dirname(page_repo), target)))
        if site is None or site == posixpath.normpath(posixpath.join(page_dir, target)):
            return match.group(0)
        return match.group(1) + posixpath.relpath(site, page_dir or ".") + (match.group(3) or "") + match.group(4)

    return LINK.sub(rewrite, markdown)
