"""What a reader of the book sees, checked from the sources and the committed reference figures (nothing
is built or executed): reference-figure slots in every chapter, honest labels, no undefined jargon, math
that renders offline, and a small committed figure set with its provenance."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))
PAGES = CHAPTERS + sorted((ROOT / "book").glob("*.md"))
FIGURES = ROOT / "book" / "reference_results" / "quick" / "figures"
SLOT = re.compile(r'cc\.show_reference_figure\(\s*"([^"]+)",\s*"([^"]+)"')
SAVED = re.compile(r'cc\.save_figure\([^,]+,\s*"([^"]+)",\s*"([^"]+)"')
CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_every_data_chapter_shows_a_reference_figure_it_also_saves():
    data_chapters = [c for c in CHAPTERS if "cc.load_cifar10(" in c.read_text()]
    assert len(data_chapters) >= 13
    for chapter in data_chapters:
        text = chapter.read_text()
        slots, saved = set(SLOT.findall(text)), set(SAVED.findall(text))
        assert slots, f"{chapter.name} shows no reference figure"
        assert slots <= saved, f"{chapter.name}: slots with no save_figure: {slots - saved}"
        assert {c for c, _ in slots} == {chapter.stem}, f"{chapter.name} names another chapter's figures"
        committed = {(chapter.stem, png.stem) for png in (FIGURES / chapter.stem).glob("*.png")}
        assert slots & committed, f"{chapter.name}: none of its reference figures is committed"


def test_no_synthetic_caption_uses_cifar10_class_names():
    for chapter in CHAPTERS:
        text = chapter.read_text()
        # Class names for captions come from the data (data.class_names: shapes for the stand-in).
        assert "cc.CLASS_NAMES" not in text, f"{chapter.name} captions with CIFAR-10's names whatever the data"
        for title in re.findall(r'(?:set_title|suptitle|title=)\(?\s*f?"([^"]*)"', text):
            assert not any(re.search(rf"\b{n}\b", title) for n in CIFAR_NAMES), (chapter.name, title)


@pytest.mark.parametrize("path", PAGES + sorted((ROOT / "cifar_course").rglob("*.py")), ids=lambda p: p.name)
def test_no_page_speaks_of_a_seed_course(path):
    text = path.read_text().lower()
    for phrase in ("seed course", "seed article", "the seed's", "the seed recipe", "seed recipe"):
        assert phrase not in text, f"{path.name} says {phrase!r}: name the recipe or the source instead"


def test_math_renders_offline():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]
    assert "sphinx-mathjax-offline" in sphinx["extra_extensions"]
    assert not sphinx["config"]["mathjax_path"].startswith(("http:", "https:", "//"))
    assert "sphinx-mathjax-offline" in (ROOT / "pyproject.toml").read_text()


def test_committed_reference_figures_have_provenance_and_stay_small():
    pngs = sorted(FIGURES.glob("*/*.png"))
    assert pngs, "no reference figure committed"
    slots = {slot for c in CHAPTERS for slot in SLOT.findall(c.read_text())}
    for png in pngs:
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.stat().st_size < 200_000, f"{png.name} is {png.stat().st_size:,} bytes"
        prov = json.loads(png.with_suffix(".json").read_text())
        assert prov["synthetic"] is False and prov["profile"] == "quick"
        assert prov["chapter"] == png.parent.name and prov["figure"] == png.stem
        assert prov["commit"] and prov["cpu"] and prov["date"]
        assert "/" not in prov["data"], f"{png.name}: a local path in its provenance"
        assert (png.parent.name, png.stem) in slots, f"{png} is shown by no chapter"
    assert sum(p.stat().st_size for p in FIGURES.rglob("*")) < 4_000_000
    assert not [p for p in FIGURES.rglob("*") if p.is_file() and p.suffix not in (".png", ".json")]


def test_chapter_code_lines_fit_the_page():
    # Longer code lines scroll sideways in the rendered book. A code cell opens with a
    # ```{code-cell} line and ends at the next ``` line; its option lines count too.
    offenders = []
    for chapter in CHAPTERS:
        in_code = False
        for number, line in enumerate(chapter.read_text().splitlines(), start=1):
            if line.startswith("```{code-cell}"):
                in_code = True
            elif line.startswith("```"):
                in_code = False
            elif in_code and len(line) > 88:
                offenders.append(f"{chapter.name}:{number} ({len(line)} characters)")
    assert not offenders, "code lines over 88 characters:\n" + "\n".join(offenders)
