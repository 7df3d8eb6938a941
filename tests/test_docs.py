"""README.md and docs/: every relative link points at a file that exists, every
`#anchor` at a heading of that file, and README's stage table names every output."""

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors: headings lower-cased, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    links = [link for link in LINK.findall(page.read_text()) if not link.startswith(("http://", "https://"))]
    assert page.name != "README.md" or "docs/pipeline.md" in links  # README points at the internals
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.name}: {link}"


def test_the_readme_stage_table_names_every_output_dvc_yaml_declares() -> None:
    table = dict(re.findall(r"^\| `(\w+)` \|[^|]*\| (.*) \|$", (REPO / "README.md").read_text(), flags=re.MULTILINE))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(table) == list(stages)
    for name, stage in stages.items():
        named = [path.rstrip("/") for path in re.findall(r"`([^`]+)`", table[name])]
        outputs = [out if isinstance(out, str) else next(iter(out)) for out in stage["outs"]]
        unnamed = [out for out in outputs if not any(fnmatch.fnmatch(out, path) for path in named)]
        assert not unnamed, f"README's {name} row lacks {unnamed}"


def test_the_readme_is_a_first_day_not_a_manual() -> None:
    """README is the how-to of a user's first day; the details live in docs/."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move details into docs/"


@pytest.mark.parametrize("page", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_docs_page_is_linked_from_the_readme(page: Path) -> None:
    links = {link.partition("#")[0] for link in LINK.findall((REPO / "README.md").read_text())}
    assert f"docs/{page.name}" in links, f"README.md links no docs/{page.name}"
