import pytest

from verl.utils.doc_sections import markers, publish_figures, write_section


def test_write_section_replaces_only_between_markers(tmp_path):
    page = tmp_path / "results.md"
    start, end = markers("res")
    page.write_text(f"intro\n{start}\nold\n{end}\noutro\n")
    write_section(page, "res", "| new |\n")
    assert page.read_text() == f"intro\n{start}\n| new |\n{end}\noutro\n"
    page.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        write_section(page, "res", "x")


def test_publish_figures_copies_next_to_the_page_and_links_relative_to_it(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "acc.png").write_bytes(b"png")
    page = tmp_path / "docs" / "results.md"
    line = publish_figures(page, [(tmp_path / "run" / "acc.png", "ttrv_acc.png", "accuracy"),
                                  (tmp_path / "run" / "missing.png", "x.png", "missing")])
    assert line == "![accuracy](results/ttrv_acc.png)"
    assert (tmp_path / "docs" / "results" / "ttrv_acc.png").read_bytes() == b"png"
