"""Sphinx configuration of the documentation site: the pages in docs/ (Markdown, through MyST), the README (the
front page: docs/index.md includes it), CHANGES.md (docs/changes.md includes it) and an API reference
generated from the package's docstrings (docs/api.md).

Build it as .ci/run does, warnings as errors, with the package and the `docs` extra installed
(`python -m pip install -e '.[docs]'`):

    python -m sphinx -E -W -n --keep-going -b html docs build/docs

and open build/docs/index.html.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx import addnodes
from sphinx.pycode import ModuleAnalyzer

from timer_manager import _version

project = "timer_manager"
author = "timer_manager developers"
copyright = "timer_manager developers"
release = _version.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# conf.py's own folder is the source: keep out what is not a page. (The build goes to build/docs, outside it.)
exclude_patterns = ["_build", "**/.*"]

# Every cross-reference must resolve (-n): these are the standard library's, which would need intersphinx
# and so the network; the build has none.
nitpicky = True
nitpick_ignore = [
    ("py:class", "asyncio.queues.QueueEmpty"),
    ("py:class", "asyncio.queues.QueueFull"),
    ("py:class", "collections.abc.AsyncIterator"),
    ("py:class", "collections.abc.Callable"),
    ("py:class", "collections.abc.Coroutine"),
    ("py:class", "collections.abc.Iterable"),
    ("py:class", "contextlib.AbstractAsyncContextManager"),
    ("py:class", "datetime.datetime"),
    ("py:class", "datetime.timedelta"),
    ("py:class", "redis.asyncio.Redis"),
    ("py:class", "redis.asyncio.RedisCluster"),
    # The backend seam's protocol (timer_manager/_backend.py): LocalBackend or timer_manager.redis.RedisBackend.
    ("py:class", "timer_manager._backend.Backend"),
]

# --- MyST (the Markdown pages) ----------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# Anchors for headings down to ###, so that links such as design.md#the-backend-seam resolve.
myst_heading_anchors = 3

# --- autodoc (docs/api.md) --------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# The annotations' names, as the code writes them (every module has `from __future__ import annotations`),
# point at the entries docs/api.md documents rather than at what they expand to.
autodoc_type_aliases = {
    "Duration": "timer_manager.handle.Duration",
    "TimerEvent": "timer_manager.TimerEvent",
}
add_module_names = False
python_use_unqualified_type_names = True
python_display_short_literal_types = True

# Handles come from TimerManager.new() or TimerManager.open() (and TimerHandle.threadsafe()), never from their
# constructors, which take the manager's private runner: show these classes without a signature.
_NO_SIGNATURE = {"timer_manager.TimerHandle", "timer_manager.ThreadsafeHandle"}
# autodoc unwraps autodoc_type_aliases only at the top of an annotation, and shows the wrapper's repr inside
# another type (`list[TypeAliasForwardRef('timer_manager.TimerEvent')]`): unwrap it there too.
_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([\w.]+)'\)")


def _signature(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str, str] | None:
    if what == "class" and name in _NO_SIGNATURE:
        return ("", "")
    if name == "timer_manager.TimerManager.open":
        # An @asynccontextmanager: what the call returns is the context manager, not the generator.
        return_annotation = "contextlib.AbstractAsyncContextManager[TimerHandle]"
    if signature is None and return_annotation is None:
        return None
    return (
        _ALIAS_REPR.sub(r"\1", signature) if signature else signature,
        _ALIAS_REPR.sub(r"\1", return_annotation) if return_annotation else return_annotation,
    )


# Module-level names that timer_manager (or handle.py) imports, and the module whose source holds their
# docstring: autodoc looks for a variable's docstring only in the module it is documented under, and would
# otherwise show the docstring of the value's type (str's, for CORE).
_DEFINED_IN = {
    "timer_manager.CORE": "timer_manager._core",
    "timer_manager.TimerEvent": "timer_manager.events",
    "timer_manager.handle.Duration": "timer_manager._validate",
}


def _data_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what != "data" or name not in _DEFINED_IN:
        return
    docs = ModuleAnalyzer.for_module(_DEFINED_IN[name]).find_attr_docs()
    lines[:] = list(docs.get(("", name.rpartition(".")[2]), []))


# Files at the repository's top level that the site includes as pages of its own, and links to them: from a
# page (`../CHANGES.md`, which MyST turns into an absolute path) or from the README, which index.md includes
# (`CHANGES.md`, which MyST leaves unresolved).
_INCLUDED = {"CHANGES": "changes"}


def _repository_links(app: Any, doctree: Any) -> None:
    root = Path(app.srcdir).parent
    for node in list(doctree.findall(addnodes.pending_xref)):
        if node.get("reftype") != "myst":
            continue
        target = Path(node["reftarget"])
        if node.get("refdomain") == "doc" and target.is_absolute() and target.parent == root:
            name = target.name
        elif node.get("refdomain") is None and node.get("refdoc") == "index":
            name = str(target.with_suffix("")) if target.suffix == ".md" else ""
            if name not in _INCLUDED and (root / target).is_file():
                # The README's link to a file of the repository that is not a page of the site (a bench, the
                # licence): the site shows its text, unlinked. A link to a file that does not exist still fails.
                node.replace_self(node.children)
                continue
        else:
            continue
        if name in _INCLUDED:
            node["refdomain"] = "doc"
            node["reftarget"] = _INCLUDED[name]
            node.attributes.setdefault("reftargetid", None)


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _signature)
    app.connect("autodoc-process-docstring", _data_docstring)
    app.connect("doctree-read", _repository_links)


# --- HTML -------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"timer_manager {release}"
html_static_path: list[str] = []
html_copy_source = False
html_show_sourcelink = False
