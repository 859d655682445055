import pytest

from verl.utils.readme import markers, write_section


def test_write_section_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    start, end = markers("res")
    readme.write_text(f"intro\n{start}\nold\n{end}\noutro\n")
    write_section(readme, "res", "| new |\n")
    assert readme.read_text() == f"intro\n{start}\n| new |\n{end}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        write_section(readme, "res", "x")
