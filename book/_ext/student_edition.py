"""Sphinx extension: the student edition of the book, with every exercise solution removed.

`make book-student` sets CIFAR_COURSE_EDITION=student (or put `student_edition: true` under
`sphinx: config:` in _config.yml). The exercises stay; every `solution` / `solution-start ...
solution-end` block of sphinx-exercise goes, with the code cells inside it and their outputs, and so do
the page sources (`_sources`, the download button), which would still hold them.

sphinx-exercise's own `hide_solutions` is not used: in sphinx-exercise 1.2.1 it drops the
`solution-start` marker but keeps everything up to `solution-end` and the end marker itself, and the HTML
writer then fails on that marker ("departing unknown node type: solution_end_node"). Gated solutions are
the course's kind, since they hold executed code cells.
"""

from __future__ import annotations

import os


def _remove_solutions(app, doctree):
    if not app.config.student_edition:
        return
    from sphinx_exercise.nodes import solution_node

    for node in list(doctree.findall(solution_node)):  # gated solutions are merged into one node by now
        node.parent.remove(node)


def _configure(app, config):
    if config.student_edition:
        config.html_copy_source = False  # the page sources hold the solutions
        options = dict(config.html_theme_options or {})
        options["use_download_button"] = False
        config.html_theme_options = options


def setup(app):
    app.add_config_value("student_edition", os.environ.get("CIFAR_COURSE_EDITION") == "student", "env")
    app.connect("config-inited", _configure)
    app.connect("doctree-read", _remove_solutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
