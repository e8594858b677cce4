"""Sphinx configuration for the eventbus documentation.

Pages are Markdown (MyST); API pages use autodoc with Google-style docstrings. The
build must pass with warnings as errors and without network access:

    sphinx-build -W --keep-going -E -b html docs docs/_build/html
"""

from __future__ import annotations

import configparser
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "shared-infra-event-bus"
ROOT = Path(__file__).resolve().parent.parent


def _release() -> str:
    """The installed distribution's version, else the one setup.cfg declares."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        setup_cfg = configparser.ConfigParser()
        setup_cfg.read(ROOT / "setup.cfg")
        return setup_cfg.get("metadata", "version", fallback="unknown")


# -- project ---------------------------------------------------------------------------

project = "eventbus"
author = "Shared Infrastructure"
copyright = author  # noqa: A001 - the name Sphinx reads
release = _release()
version = ".".join(release.split(".")[:2])

# -- general ---------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    # No sphinx.ext.intersphinx: builds run without network access.
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "requirements.txt"]
nitpicky = False
language = "en"

# -- MyST ------------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
# Anchors for headings down to ###, so that [text](page.md#a-heading) links resolve.
myst_heading_anchors = 3

# -- autodoc and napoleon --------------------------------------------------------------

autodoc_typehints = "description"
autodoc_member_order = "bysource"
# False: show default values, not their source text. With True, the generated
# __init__ of attrs classes renders as `host=attr_dict['host'].default`. Defaults made
# by a factory still render as NOTHING: api.md spells out those two signatures.
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Optional dependencies (extras) that a docs build need not install.
autodoc_mock_imports = ["uvicorn", "jwt", "flask", "werkzeug", "click", "django", "celery", "kombu"]

# -- HTML ------------------------------------------------------------------------------

html_theme = "furo"
html_title = "eventbus"
html_static_path: list[str] = []
