"""The README is a short product page whose links resolve, and docs/models.md shows what the cards say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
MODELS_BLOCK = re.compile(r"<!-- srweb models --markdown: begin -->\n(.*?)<!-- srweb models --markdown: end -->", re.S)
OUTSIDE_PATH = "../" + "shared"  # spelled in two parts so this file does not match its own check


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_readme_is_a_short_product_page_with_the_screenshot():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "](docs/screenshot.png)" in readme and (REPO / "docs" / "screenshot.png").is_file()
    for command in ("make run", "make test"):
        assert command in readme


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in PAGES:
        for target in _relative_links(page):
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_the_docs_pages_exist():
    for name in ("models", "evaluation", "performance", "deploy", "settings", "architecture"):
        assert (REPO / "docs" / f"{name}.md").is_file(), name


def test_no_page_or_module_points_outside_the_repository():
    files = [*PAGES, REPO / "Makefile", REPO / ".ci" / "run", *REPO.glob("srweb/**/*.py"), *REPO.glob("tests/*.py")]
    offenders = [str(f.relative_to(REPO)) for f in files if OUTSIDE_PATH in f.read_text(errors="replace")]
    assert not offenders, offenders


def test_models_page_equals_srweb_models_markdown():
    page = (REPO / "docs" / "models.md").read_text()
    block = MODELS_BLOCK.search(page)
    assert block, "docs/models.md lost its generated block"
    generated = subprocess.run(
        [str(Path(sys.executable).parent / "srweb"), "models", "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert block.group(1).strip() == generated.strip(), "regenerate: srweb models --markdown"
