"""Fails on uses of TensorFlow, Keras, TFRS or ScaNN internals, judged from the AST.

Usage: ``python tools/check_public_api.py [PATH ...]`` (default: ``tfrs_recsys tests bench tools``)
prints one line per finding, ``path:line:col: [key] message``, and exits 1 if there is any finding
not in the allow-list (``tools/public_api_allowlist.txt``) or any allow-list entry that matches
nothing. An allow-list line is ``path:key  # reason``: the reason is required.

The rules, each with the ``key`` a finding is reported (and allow-listed) under:

1. ``__internal__`` on ``tf``: any attribute ``__internal__``.
2. ``tf.raw_ops``: any attribute ``raw_ops``, or an import of ``tensorflow.raw_ops``.
3. ``keras.src`` / ``tf_keras.src``: an import from Keras' implementation modules (also through
   ``importlib.import_module``), or the attribute ``keras.src`` / ``tf_keras.src``.
4. ``tensorflow.python``: an import from TensorFlow's implementation modules.
5. ``._call_flat``: any attribute ``_call_flat``.
6. ``_name`` (the name itself): an underscore name that is not ours.

   a. ``obj._name``, read or written, where ``obj`` is not ``self``, ``cls`` or ``super()``,
      ``_name`` is not a dunder, and ``_name`` is defined nowhere in the scanned source: no
      ``def _name`` / ``class _name``, no ``self._name = ...`` / ``cls._name = ...``, no
      ``_name = ...`` in a class or module body. The object's type is unknown to an AST, so this
      flags another library's private attribute as well (namedtuple's documented ``_replace``,
      ``_asdict``, ``_fields`` and ``_make`` excepted); a name we define ourselves is taken as ours.
   b. In a class of ours that derives from a library class: ``def _name``, ``_name = ...`` in the
      class body, or ``self._name`` / ``cls._name`` / ``super()._name``, read or written, where a
      library class in the base's MRO has ``_name`` (in its ``__dict__`` or assigned as
      ``self._name = ...`` in its source): overriding or reading the library's private state.
      Library bases are imported to be inspected; our own bases are followed through the source.
   c. ``from module import _name`` or ``import module._private`` of a module that is not ours.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = ("tfrs_recsys", "tests", "bench", "tools")
ALLOWLIST = REPO / "tools" / "public_api_allowlist.txt"
# Underscore names that are a documented public API (collections.namedtuple).
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
KERAS_SRC = re.compile(r"^(tf_keras|keras)\.src(\.|$)")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: [{self.key}] {self.message}"


@dataclass
class Module:
    """A parsed source file: its dotted name, tree and the names its imports bind."""

    name: str
    path: str
    tree: ast.Module
    imports: dict  # local name -> (module, attribute or None)


def module_name(path: Path, root: Path) -> str:
    """``tfrs_recsys/models/base.py`` -> ``tfrs_recsys.models.base``; a file in tests/, bench/ or
    tools/ is imported by its bare name (those folders are on ``sys.path`` when they run)."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] != "tfrs_recsys":
        parts = parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def bound_imports(tree: ast.Module, name: str) -> dict:
    imports = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = (alias.name, None)
                else:
                    imports[alias.name.split(".")[0]] = (alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative (to a module, not a package's __init__): ours
                base = ".".join(name.split(".")[:-node.level] + ([base] if base else []))
            for alias in node.names:
                imports[alias.asname or alias.name] = (base, alias.name)
    return imports


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def is_self_like(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def defined_names(stmt: ast.stmt) -> list[str]:
    """The names a module- or class-body statement defines: a def, a class, assigned names."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def own_names(modules: list[Module]) -> set[str]:
    """Underscore names our source defines (rule 6a)."""
    names: set[str] = set()
    for module in modules:
        bodies = [module.tree.body] + [n.body for n in ast.walk(module.tree) if isinstance(n, ast.ClassDef)]
        names.update(name for body in bodies for stmt in body for name in defined_names(stmt))
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and is_self_like(node.value):
                names.add(node.attr)
    return {n for n in names if is_private(n)}


def source_private_names(cls: type) -> set[str]:
    """Underscore names a library class has: in its ``__dict__`` or assigned to ``self`` in its source."""
    names = {n for n in vars(cls) if is_private(n)}
    try:
        tree = ast.parse(inspect.getsource(cls).replace("\r", ""))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                isinstance(node.value, ast.Name) and node.value.id == "self" and is_private(node.attr):
            names.add(node.attr)
    return names


class Checker:
    """Runs the rules over a set of modules (see the module docstring)."""

    def __init__(self, modules: list[Module]):
        self.modules = {m.name: m for m in modules}
        self.own = own_names(modules)
        self.own_packages = {m.name.split(".")[0] for m in modules}
        self._library_cache: dict[type, set[str]] = {}
        self._class_cache: dict[tuple[str, str], set[str]] = {}

    def is_ours(self, module: str) -> bool:
        return module.split(".")[0] in self.own_packages

    # -- rule 6b: library private names a class of ours inherits ------------------------------------

    def library_names(self, cls: type) -> set[str]:
        if cls not in self._library_cache:
            names: set[str] = set()
            for klass in cls.__mro__:
                if klass.__module__ not in ("builtins", "abc", "typing"):
                    names |= source_private_names(klass)
            self._library_cache[cls] = names
        return self._library_cache[cls]

    def resolve(self, module: Module, expr: ast.AST):
        """What a base-class expression names: ("ours", module, class), ("library", class) or None."""
        path = dotted(expr)
        if path is None:
            return None
        head, *rest = path.split(".")
        if not rest and any(isinstance(n, ast.ClassDef) and n.name == head for n in module.tree.body):
            return ("ours", module.name, head)
        if head not in module.imports:
            return None
        source, attribute = module.imports[head]
        full = ".".join([source] + ([attribute] if attribute else []) + rest)
        if self.is_ours(source):
            owner, _, name = full.rpartition(".")
            while owner in self.modules:
                target = self.modules[owner]
                if any(isinstance(n, ast.ClassDef) and n.name == name for n in target.tree.body):
                    return ("ours", owner, name)
                if name not in target.imports:
                    return None
                src, attr = target.imports[name]
                owner, name = (src, attr) if attr else src.rpartition(".")[::2]
            return None
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        parts = full.split(".")
        try:  # what the name is at run time: attributes of the package, submodules where not yet loaded
            obj = importlib.import_module(parts[0])
            for i, attr in enumerate(parts[1:], 2):
                obj = getattr(obj, attr) if hasattr(obj, attr) else \
                    importlib.import_module(".".join(parts[:i]))
        except ImportError:
            return None
        return ("library", obj) if isinstance(obj, type) else None

    def inherited(self, owner: str, class_name: str) -> set[str]:
        """The private names of the library classes our class ``owner.class_name`` derives from."""
        key = (owner, class_name)
        if key not in self._class_cache:
            self._class_cache[key] = set()  # a cycle resolves to nothing
            module = self.modules[owner]
            node = next(n for n in module.tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
            self._class_cache[key] = self.class_names(module, node)
        return self._class_cache[key]

    def class_names(self, module: Module, node: ast.ClassDef) -> set[str]:
        names: set[str] = set()
        for base in node.bases:
            resolved = self.resolve(module, base)
            if resolved and resolved[0] == "library":
                names |= self.library_names(resolved[1])
            elif resolved and resolved[0] == "ours":
                names |= self.inherited(resolved[1], resolved[2])
        return names

    # -- the scan -----------------------------------------------------------------------------------

    def check(self, module: Module) -> list[Finding]:
        out: list[Finding] = []

        def add(node, key, message):
            out.append(Finding(module.path, node.lineno, node.col_offset, key, message))

        def visit(node: ast.AST, inherited: set[str]) -> None:
            if isinstance(node, ast.ClassDef):
                names = self.class_names(module, node)
                for stmt in node.body:
                    for name in set(defined_names(stmt)) & names:
                        add(stmt, name, f"{node.name} overrides {name}, private to a library base class")
                for child in ast.iter_child_nodes(node):
                    visit(child, names)
                return
            self.check_node(node, inherited, add)
            for child in ast.iter_child_nodes(node):
                visit(child, inherited)

        visit(module.tree, set())
        return out

    def check_node(self, node: ast.AST, inherited: set[str], add) -> None:
        if isinstance(node, ast.Attribute):
            name, path = node.attr, dotted(node)
            if name == "__internal__":
                add(node, "tf.__internal__", f"{path or name}: TensorFlow's internal API")
            elif name == "raw_ops":
                add(node, "tf.raw_ops", f"{path or name}: TensorFlow's raw op bindings")
            elif name == "src" and path in ("keras.src", "tf_keras.src"):
                add(node, path, f"{path}: Keras' implementation modules")
            elif name == "_call_flat":
                add(node, "._call_flat", "ConcreteFunction._call_flat: call the function or its signature")
            elif is_private(name):
                if is_self_like(node.value):
                    if name in inherited:
                        add(node, name, f"{name}: private state of a library base class")
                elif name not in self.own and name not in PUBLIC_UNDERSCORE:
                    add(node, name, f"{path or '(...).' + name}: defined nowhere in our source")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.Import):
                modules = [(alias.name, None) for alias in node.names]
            else:
                modules = [(node.module or "", alias.name) for alias in node.names] if not node.level else []
            for module, name in modules:
                self.check_import(node, module, name, add)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and (dotted(node.func) or "").split(".")[-1] in \
                ("import_module", "__import__"):
            self.check_import(node, node.args[0].value, None, add)

    def check_import(self, node: ast.AST, module: str, name: str | None, add) -> None:
        full = f"{module}.{name}" if name else module
        if KERAS_SRC.match(full):
            add(node, full.split(".src")[0] + ".src", f"import of {full}: Keras' implementation modules")
        elif full == "tensorflow.python" or full.startswith("tensorflow.python."):
            add(node, "tensorflow.python", f"import of {full}: TensorFlow's implementation modules")
        elif full == "tensorflow.raw_ops" or full.startswith("tensorflow.raw_ops."):
            add(node, "tf.raw_ops", f"import of {full}: TensorFlow's raw op bindings")
        elif not self.is_ours(module):
            private = [p for p in full.split(".") if is_private(p)]
            if private:
                add(node, private[0], f"import of {full}: private to {module}")


def load(paths: list[Path], root: Path = REPO) -> list[Module]:
    modules = []
    for path in paths:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            name = module_name(file, root)
            tree = ast.parse(file.read_text(), filename=str(file))
            modules.append(Module(name, str(file.relative_to(root)), tree, bound_imports(tree, name)))
    return modules


def read_allowlist(path: Path) -> tuple[dict[tuple[str, str], str], list[str]]:
    """``{(path, key): reason}`` and the errors of malformed lines (no reason, no ``path:key``)."""
    entries, errors = {}, []
    if not path.exists():
        return entries, errors
    for number, line in enumerate(path.read_text().splitlines(), 1):
        entry, _, reason = line.partition("#")
        if not entry.strip():
            continue
        where, _, key = entry.strip().partition(":")
        if not key or not reason.strip():
            errors.append(f"{path.name}:{number}: expected `path:key  # reason`, got {line!r}")
            continue
        entries[(where, key.strip())] = reason.strip()
    return entries, errors


def run(paths: list[Path], root: Path = REPO, allowlist: Path = ALLOWLIST) -> tuple[list[Finding], list[str]]:
    """Findings not allow-listed, and the allow-list's errors (malformed or unused entries)."""
    modules = load(paths, root)
    checker = Checker(modules)
    findings = [f for m in modules for f in checker.check(m)]
    entries, errors = read_allowlist(allowlist)
    used = {(f.path, f.key) for f in findings}
    scanned = {m.path for m in modules}
    errors += [f"{allowlist.name}: unused entry {p}:{k} (remove it)" for p, k in entries
               if p in scanned and (p, k) not in used]
    return [f for f in findings if (f.path, f.key) not in entries], errors


def main(argv: list[str]) -> int:
    paths = [REPO / p for p in (argv[1:] or DEFAULT_ROOTS)]
    findings, errors = run(paths)
    for line in [*map(str, findings), *errors]:
        print(line)
    if findings or errors:
        print(f"{len(findings)} use(s) of library internals, {len(errors)} allow-list error(s): use a public "
              f"API, or allow-list a use with no public alternative in {ALLOWLIST.relative_to(REPO)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
