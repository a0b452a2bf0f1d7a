"""Checks that every public SDK call and every ``lepton`` command is named in a test.

The surface, found by introspection (nothing here lists it by hand):

- every public method of every namespace of ``la.Client`` (``client.datasets.upload``)
  and of ``la.AsyncClient``, and the clients' own public methods and keyword options;
- every public method of the public classes (``la.__all__``) and of the objects calls
  return (``Dataset``, the ``la.models`` estimators); every public class itself
  (errors included) and every estimator class in ``la.models``;
- every command of the ``lepton`` command tree (``lepton data versions``) and the
  global options (``lepton --ca-file``).

"Named in a test" is a static check over the test files (``tests/``, ``libs/*/tests``,
``services/*/tests``) and the docs a test runs (a ``.md`` file whose name a test file
mentions; its ```python or ```bash blocks as that test reads them): a namespace method
needs its chain (``.datasets.upload``) in a file that imports ``lepton_ai``; a method of
a returned object its attribute (``.to_polars``) there; an async twin, whose names are
its sync twin's, counts only in files that name its class (``AsyncClient``); a command
its words in order among the string arguments of a call to a ``lepton``/``*_cli``
helper, in a list or tuple of a file that runs ``lepton``, or on a ``lepton`` line of
a doc's bash block. It is a name check, not a proof (``.split`` of a string counts for
``Dataset.split``), and cannot tell a real test from a mention: the e2e tests it points
at assert outcomes (tests/test_sdk_surface_e2e.py, tests/test_cli_surface_e2e.py).

``ALLOWED`` is the short list of what is covered elsewhere, each with its reason. An
entry that is no longer on the surface, or that a test now names, is reported as stale,
so the list only shrinks.

Run by a test (tests/test_surface_coverage.py); ``python tools/check_surface_coverage.py``
prints the inventory (``-v``: with the files that name each item).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "127.0.0.1:1"  # clients are built to be looked at, never called
#: Functions whose string arguments are a `lepton` command line (lepton, lepton_cli, run_cli, ...).
CLI_HELPER = re.compile(r"lepton(_\w+)?|\w*_cli|cli")
#: A test file that runs the `lepton` executable (its lists and tuples may be command lines).
RUNS_CLI = re.compile(r"[\"']lepton[\"']|lepton_cli")
TWINS = (
    "an awaitable twin of a sync call that tests name: libs/lepton-ai/tests/test_async_client.py checks that each "
    "twin has the sync signature and calls that sync method, and tests/test_async_client_e2e.py runs them"
)

#: Surface items not named by any test, and why that is fine. Keys may be fnmatch patterns.
ALLOWED: dict[str, str] = {
    "la.AsyncDataset*": TWINS,
    "la.AsyncModel*": TWINS,
    "async_client.*": TWINS,
    "la.SplitSpec.to_pb": "the request form of a SplitSpec, used by Dataset.split/to_polars, which tests call",
    "lepton --install-completion": "Typer's shell-completion installer (it edits the user's shell profile)",
    "lepton --show-completion": "Typer's shell-completion script, printed; Typer's own tests cover it",
}


@dataclass(frozen=True)
class Item:
    """One thing on the surface and how a test would name it."""

    name: str  # what the inventory shows: "client.datasets.upload", "lepton data versions"
    kind: str  # "chain", "attr", "class", "keyword", "command", "option"
    words: tuple[str, ...]  # the attribute chain, the class name, or the command's words
    #: Only files that mention this count (async twins share their sync methods' names).
    within: str = ""


@dataclass
class Sources:
    """What the test files (and the docs they run) name."""

    chains: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (owner, attr) -> files
    attrs: dict[str, set[str]] = field(default_factory=dict)  # attribute or name -> files (SDK files only)
    keywords: dict[str, set[str]] = field(default_factory=dict)  # keyword argument -> files (SDK files only)
    argv: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # CLI word runs and their file
    texts: dict[str, str] = field(default_factory=dict)  # file -> its text

    def add(self, table: dict[Any, set[str]], key: Any, where: str) -> None:
        table.setdefault(key, set()).add(where)


# ---------------------------------------------------------------------------------- surface


def _public_methods(cls: type) -> list[str]:
    names = []
    for name, value in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        if inspect.isfunction(value) or isinstance(inspect.getattr_static(cls, name, None), property):
            names.append(name)
    return sorted(names)


def _namespaces(client: Any) -> dict[str, Any]:
    """The client's public attributes that are SDK objects (``datasets``, ``jobs``, ...)."""
    out = {}
    for name in dir(client):
        if name.startswith("_") or name == "sync":
            continue
        value = getattr(client, name, None)
        if not callable(value) and type(value).__module__.startswith("lepton_ai."):
            out[name] = value
    return out


def _within(cls: type) -> str:
    """Async twins count only in files that use them: their names are their sync twins'."""
    return cls.__name__ if cls.__name__.startswith("Async") else ""


def _client_items(label: str, cls: type, client: Any) -> Iterator[Item]:
    namespaces = _namespaces(client)
    within = _within(cls)
    for ns, obj in sorted(namespaces.items()):
        for method in _public_methods(type(obj)):
            yield Item(f"{label}.{ns}.{method}", "chain", (ns, method), within)
    for method in _public_methods(cls):
        if method not in namespaces and method != "sync":
            yield Item(f"la.{cls.__name__}.{method}", "attr", (method,), within)
    for param in inspect.signature(cls).parameters.values():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            yield Item(f"la.{cls.__name__}({param.name}=)", "keyword", (param.name,), within)


def sdk_surface() -> list[Item]:
    """Every public call of the SDK, as :class:`Item` s."""
    import lepton_ai as la
    from lepton_ai.models import Model

    items: list[Item] = []
    client = la.Client("k", UNREACHABLE)
    items += _client_items("client", la.Client, client)
    client.close()
    async_client = la.AsyncClient("k", UNREACHABLE)
    items += _client_items("async_client", la.AsyncClient, async_client)
    asyncio.run(async_client.close())
    for name in sorted(la.__all__):
        value = getattr(la, name)
        if not isinstance(value, type) or value in (la.Client, la.AsyncClient):
            continue
        items.append(Item(f"la.{name}", "class", (name,)))
        if not issubclass(value, BaseException):
            items += [Item(f"la.{name}.{m}", "attr", (m,), _within(value)) for m in _public_methods(value)]
    items += [Item(f"la.models.Model.{m}", "attr", (m,)) for m in _public_methods(Model)]
    for name, value in sorted(vars(la.models).items()):
        if isinstance(value, type) and issubclass(value, Model) and value is not Model:
            items.append(Item(f"la.models.{name}", "class", (name,)))
    return items


def cli_surface() -> list[Item]:
    """Every ``lepton`` command (as its words) and global option."""
    import typer

    from lepton_ai.cli import app

    root = typer.main.get_command(app)
    items: list[Item] = []

    def walk(command: Any, words: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children is None:
            items.append(Item(" ".join(("lepton", *words)), "command", words))
            return
        for name, child in sorted(children.items()):
            walk(child, (*words, name))

    walk(root, ())
    for param in root.params:
        for opt in param.opts:
            if opt.startswith("--"):
                items.append(Item(f"lepton {opt}", "option", (opt,)))
    return items


# ---------------------------------------------------------------------------------- sources


def test_files() -> list[Path]:
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("libs/*/tests/**/*.py"), *ROOT.glob("services/*/tests/**/*.py")]
    return sorted(f for f in files if "__pycache__" not in f.parts)


def run_docs(texts: dict[Path, str]) -> dict[Path, list[Path]]:
    """The markdown files (docs/, README.md) whose file name a test mentions, and those tests."""
    docs = [*ROOT.glob("docs/**/*.md"), ROOT / "README.md"]
    out: dict[Path, list[Path]] = {}
    for doc in sorted(d for d in docs if d.is_file()):
        mention = re.compile(rf"['\"/]{re.escape(doc.name)}['\"]")
        runners = [path for path, text in texts.items() if mention.search(text)]
        if runners:
            out[doc] = runners
    return out


def _chain(node: ast.expr) -> list[str]:
    """``a.b.c`` as ``["a", "b", "c"]`` (calls and subscripts in between are skipped)."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            if isinstance(node, ast.Name):
                parts.append(node.id)
            return parts[::-1]


def _string_runs(nodes: Iterable[ast.expr]) -> Iterator[tuple[str, ...]]:
    """Runs of consecutive string constants (``*args`` and other expressions break a run)."""
    run: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            run.append(node.value)
        else:
            if run:
                yield tuple(run)
            run = []
    if run:
        yield tuple(run)


def _scan_python(source: str, where: str, found: Sources, *, uses_sdk: bool, runs_cli: bool) -> None:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and uses_sdk:
            chain = _chain(node)
            for owner, attr in pairwise(chain):
                found.add(found.chains, (owner, attr), where)
            found.add(found.attrs, node.attr, where)
        elif isinstance(node, ast.Name) and uses_sdk:
            found.add(found.attrs, node.id, where)
        elif isinstance(node, ast.ImportFrom) and uses_sdk:
            for alias in node.names:
                found.add(found.attrs, alias.name, where)
        elif isinstance(node, ast.Call):
            if uses_sdk:
                for kw in node.keywords:
                    if kw.arg:
                        found.add(found.keywords, kw.arg, where)
            called = _chain(node.func)
            if called and CLI_HELPER.fullmatch(called[-1]):
                found.argv += [(run, where) for run in _string_runs(node.args)]
        elif isinstance(node, ast.List | ast.Tuple) and runs_cli:
            found.argv += [(run, where) for run in _string_runs(node.elts)]


def sources() -> Sources:
    found = Sources()
    texts = {path: path.read_text() for path in test_files()}
    for path, text in texts.items():
        where = str(path.relative_to(ROOT))
        found.texts[where] = text
        uses_sdk = "lepton_ai" in text
        _scan_python(text, where, found, uses_sdk=uses_sdk, runs_cli=bool(RUNS_CLI.search(text)))
    for doc, runners in run_docs(texts).items():
        where = str(doc.relative_to(ROOT))
        text = found.texts[where] = doc.read_text()
        # Only the kinds of block its tests run: ```python blocks, ```bash blocks, or both.
        python = any("```python" in texts[r] for r in runners)
        bash = any("```bash" in texts[r] for r in runners)
        for block in re.findall(r"```python\n(.*?)```", text, flags=re.S) if python else []:
            _scan_python(block, where, found, uses_sdk=True, runs_cli=False)
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if bash else []:
            for line in block.splitlines():
                words = shlex.split(line.lstrip("$ "), comments=True) if "lepton" in line else []
                if words and Path(words[0]).name == "lepton":
                    found.argv.append((tuple(words[1:]), where))
    return found


# ---------------------------------------------------------------------------------- matching


def _contains(run: tuple[str, ...], words: tuple[str, ...]) -> bool:
    n = len(words)
    return any(run[i : i + n] == words for i in range(len(run) - n + 1))


def naming(item: Item, found: Sources) -> set[str]:
    """The files that name ``item``."""
    files = _naming(item, found)
    return {f for f in files if item.within in found.texts.get(f, "")} if item.within else files


def _naming(item: Item, found: Sources) -> set[str]:
    if item.kind == "chain":
        return found.chains.get((item.words[0], item.words[1]), set())
    if item.kind in ("attr", "class"):
        return found.attrs.get(item.words[-1], set())
    if item.kind == "keyword":
        return found.keywords.get(item.words[0], set())
    return {where for run, where in found.argv if _contains(run, item.words)}


Row = tuple[Item, set[str], str | None]


def allowed(name: str) -> str | None:
    return next((reason for key, reason in ALLOWED.items() if fnmatchcase(name, key)), None)


def inventory() -> list[Row]:
    """Each surface item, the files that name it, and its allow-list reason (if any)."""
    found = sources()
    return [(item, naming(item, found), allowed(item.name)) for item in sdk_surface() + cli_surface()]


def _entries(rows: list[Row]) -> Iterator[tuple[str, str, list[tuple[Item, set[str]]]]]:
    """Each allow-list entry, its reason, and the surface items it matches."""
    for key, reason in ALLOWED.items():
        yield key, reason, [(item, files) for item, files, _ in rows if fnmatchcase(item.name, key)]


def problems(rows: list[Row] | None = None) -> list[str]:
    """What no test names and no allow-list entry explains, and allow-list entries gone stale."""
    rows = inventory() if rows is None else rows
    out = [
        f"{item.name} is named in no test: cover it against the platform, or add it to ALLOWED with a reason"
        for item, files, reason in rows
        if not files and reason is None
    ]
    for key, _reason, matched in _entries(rows):
        if not matched:
            out.append(f"ALLOWED[{key!r}] matches nothing on the surface any more: remove it")
        elif all(files for _, files in matched):
            named = sorted({f for _, files in matched for f in files})
            out.append(f"ALLOWED[{key!r}] is named by {', '.join(named)} now: remove it")
    return out


def main() -> int:
    verbose = "-v" in sys.argv[1:]
    for item, files, reason in inventory():  # printed first: what the check looked at
        status = "covered" if files else ("allowed" if reason else "MISSING")
        detail = ", ".join(sorted(files)) if verbose and files else (reason or "") if not files else ""
        print(f"{status:<8} {item.name}" + (f"  ({detail})" if detail else ""))
    found = problems()
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
