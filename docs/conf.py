"""Sphinx configuration for spatialfactors."""

import os
import shutil
from datetime import date
from importlib.metadata import version as _version

project = "spatialfactors"
author = "spatialfactors developers"
copyright = f"{date.today():%Y}, {author}"
release = _version("spatialfactors")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
]

# .rst first: autosummary writes its generated pages with the first suffix, and they are rST.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/README.md"]
templates_path = ["_templates"]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
typehints_defaults = "braces"
always_document_param_types = True

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

myst_enable_extensions = ["dollarmath", "colon_fence"]
# Tutorials are executed on every build; an error in a notebook fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 900
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "spatialfactors"
html_theme_options = {
    "repository_url": "https://github.com/spatialfactors/spatialfactors",
    "use_repository_button": True,
}

nitpicky = True
# Private helper types (e.g. the data operators of spatialfactors.models._operator) appear in
# signatures of the engines but are not part of the documented API.
nitpick_ignore_regex = [(r"py:.*", r"spatialfactors\.models\._.*")]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
}
# Read the Docs has the network and resolves links into other projects; a local or CI build
# without the network skips intersphinx and only checks the links within this package.
if not (os.environ.get("READTHEDOCS") or os.environ.get("SPATIALFACTORS_DOCS_ONLINE")):
    intersphinx_mapping = {}
    nitpick_ignore_regex.append((r"py:.*", r"(?!spatialfactors\b).*"))

# Tutorials read the real data through `sf.datasets`; a checkout with ../shared/data beside it
# (this project's CI) uses that folder, any other build downloads the public originals.
_shared = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
if os.path.isdir(_shared):
    os.environ.setdefault("SPATIALFACTORS_DATA", _shared)

# Generated API pages are rebuilt from the docstrings every time.
shutil.rmtree(os.path.join(os.path.dirname(__file__), "generated"), ignore_errors=True)
smartquotes = False  # error messages on the bad-inputs page keep their straight quotes
