"""Markdown tables for notebooks."""

import cifar_course as cc
from cifar_course.tables import show_table


def test_markdown_table_formats_numbers_and_escapes_pipes():
    text = cc.markdown_table([{"name": "a|b", "n": 122570, "acc": 0.71234}, {"name": "c", "n": 3, "acc": 1.0}],
                             digits=3)
    lines = text.splitlines()
    assert lines[0] == "| name | n | acc |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| a\\|b | 122,570 | 0.712 |" and lines[3] == "| c | 3 | 1.000 |"
    assert cc.markdown_table([]) == "(no rows)"


def test_show_table_returns_displayable_markdown():
    shown = cc.show_table([{"x": 1}])
    assert "| x |" in shown.data


def test_show_table_caption_comes_above_the_table():
    shown = show_table([{"a": 1}], caption="SYNTHETIC stand-in")
    assert shown.data.startswith("*SYNTHETIC stand-in*\n\n| a |")
