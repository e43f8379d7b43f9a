"""The worked example in docs/budget.md runs and its assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "budget.md"


def test_worked_example_in_docs_runs() -> None:
    """T2/L3/L11: the documented reserve, stream cut, settle and rollover example executes."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    example = next(block for block in blocks if "Worked example" in block or "apply(" in block)
    exec(compile(example, str(DOC), "exec"), {})
