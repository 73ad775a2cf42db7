"""tools/check_public_api.py: the repository uses no library internals, and the check finds each kind."""
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import check_public_api as check  # noqa: E402


def test_the_repository_uses_public_apis_only():
    findings, errors = check.run([REPO / root for root in check.DEFAULT_ROOTS])
    assert not findings and not errors, "\n".join([*map(str, findings), *errors])


def scan(tmp_path, files: dict[str, str], allowlist: str = "") -> tuple[set, list[str]]:
    """``{(path, line, key)}`` found in ``files`` (path -> source) laid out under ``tmp_path``."""
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    (tmp_path / "allow.txt").write_text(allowlist)
    findings, errors = check.run([tmp_path / "tfrs_recsys"], root=tmp_path, allowlist=tmp_path / "allow.txt")
    return {(f.path, f.line, f.key) for f in findings}, errors


# Every kind of internal, each line annotated with the keys it must be reported under.
INTERNALS = (REPO / "tests" / "fixtures" / "public_api" / "internals.py.txt").read_text()


def test_each_internal_is_found_where_it_is(tmp_path):
    found, errors = scan(tmp_path, {"tfrs_recsys/uses.py": INTERNALS})
    path = "tfrs_recsys/uses.py"
    expected = {(path, number, key.strip())
                for number, line in enumerate(INTERNALS.splitlines(), 1) if "# expect:" in line
                for key in line.split("# expect:")[1].split(",")}
    assert len(expected) == 11 and found == expected
    assert errors == []


OURS = """\
import collections

import tensorflow as tf

Point = collections.namedtuple("Point", "x y")
_CACHE = {}


class Table:
    _registry = {}

    def __init__(self):
        self._rows = []

    def _grow(self):
        return self._rows


class Counter(tf.Module):
    def __init__(self):
        super().__init__()
        self._count = tf.Variable(0)


def use(table, other, point):
    table._grow()
    other._rows.append(point._replace(x=1))
    return Table._registry, _CACHE, other._count
"""


def test_our_own_underscore_names_are_not_flagged(tmp_path):
    found, errors = scan(tmp_path, {"tfrs_recsys/ours.py": OURS})
    assert found == set() and errors == []


SUBCLASSES = {
    "tfrs_recsys/index.py": """\
    import tensorflow as tf
    import tensorflow_recommenders as tfrs


    class Index(tfrs.layers.factorized_top_k.ScaNN):
        def __init__(self):
            super().__init__()
            self._build_searcher = lambda candidates: None
            self._own_state = 1

        def call(self, queries, k=None):
            return self._k, self._own_state


    class Adam(tf.keras.optimizers.Adam):
        def _deduplicate_sparse_grad(self, grads):
            return grads
    """,
    "tfrs_recsys/layers.py": """\
    import tensorflow as tf


    class Base(tf.keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self._tables = {}
    """,
    "tfrs_recsys/deep.py": """\
    from tfrs_recsys.layers import Base


    class Deeper(Base):
        def rename(self):
            self._name = "deeper"
            return self._tables
    """,
}


def test_a_subclass_may_not_touch_its_library_bases_private_state(tmp_path):
    found, errors = scan(tmp_path, SUBCLASSES)
    assert found == {("tfrs_recsys/index.py", 8, "_build_searcher"), ("tfrs_recsys/index.py", 12, "_k"),
                     ("tfrs_recsys/index.py", 16, "_deduplicate_sparse_grad"),
                     ("tfrs_recsys/deep.py", 6, "_name")}  # through our own Base, a Keras Layer
    assert errors == []


def test_the_allowlist_needs_a_reason_and_a_use(tmp_path):
    source = {"tfrs_recsys/uses.py": "def f(optimizer):\n    return optimizer._momentums\n"}
    found, errors = scan(tmp_path, source, "tfrs_recsys/uses.py:_momentums  # no public API for the slots\n")
    assert found == set() and errors == []
    found, errors = scan(tmp_path, source, "tfrs_recsys/uses.py:_momentums\n")
    assert found == {("tfrs_recsys/uses.py", 2, "_momentums")} and "reason" in errors[0]
    unused = "tfrs_recsys/uses.py:_momentums  # no longer used"
    found, errors = scan(tmp_path, {"tfrs_recsys/uses.py": "x = 1\n"}, unused)
    assert found == set() and "unused entry" in errors[0]
