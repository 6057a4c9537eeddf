"""Property-based: any override of any config key, with any value, ends in a plan or in exit 2 naming the key.

Never a traceback, never another exit code. Runs the real CLI entry in this process (`main(argv)`)
with dry_run=true, so each example costs one composition and one plan.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from conftest import compose
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.__main__ import main


def leaf_keys(node: object, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config whose value is not a mapping."""
    if not isinstance(node, dict):
        return [prefix]
    return [k for name, value in node.items() for k in leaf_keys(value, f"{prefix}.{name}" if prefix else name)]


SKIP = {"cache.dir", "dry_run", "tracking.uri", "tracking.artifact_root"}  # kept fixed: the test's own sandbox
KEYS = sorted(k for k in leaf_keys(compose("+recipe=pkdq")) if k not in SKIP and not k.startswith("sweep."))

scalars = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "''", "[]", "{}", "[1,2]", "{a: 1}", "int8", "abc", "-1", "0",
                     "1e-9", "nan", "inf", "???", "${oops}", "'_target_'", "[[prune]]"]),
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=12),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=scalars, extra=st.sampled_from(["", "task=tweets"]))
@example(key="pipeline", value="[[prune]]", extra="")  # once crashed the note about dropped sweeps
@example(key="pipeline", value="[{a: 1}]", extra="")
def test_any_override_plans_or_names_the_key(tmp_path: Path, key: str, value: str, extra: str) -> None:
    argv = ["+recipe=pkdq", "dry_run=true", f"cache.dir={tmp_path / 'cache'}", "tracking=none",
            *([extra] if extra else []), f"{key}={value}"]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)  # an exception escaping here fails the test: that is the property
    message = err.getvalue()
    assert code in (0, 2), (argv, code, message)
    if code == 2:
        line = [m for m in message.splitlines() if m.startswith("error: ")]
        assert len(line) == 1, message
        assert "is not allowed" in line[0], message
        top = key.split(".")[0]
        assert top in line[0] or key in line[0] or "override=" in line[0] or "task" in line[0], (argv, message)
    else:
        assert "nodes (" in out.getvalue()
