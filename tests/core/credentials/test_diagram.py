"""The state diagram in docs/credentials.md is generated from the tables and cannot drift."""

from __future__ import annotations

import contextlib
import io
import runpy
import warnings
from pathlib import Path

from routeledger.core.credentials import TRANSITIONS, CredentialState
from routeledger.core.credentials.diagram import (
    BEGIN_MARKER,
    END_MARKER,
    document_block,
    render_mermaid,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "credentials.md"


def test_the_doc_holds_exactly_the_generated_block() -> None:
    """Docs: the block between the markers equals the generator's output."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(BEGIN_MARKER)
    end = text.index(END_MARKER) + len(END_MARKER) + 1
    assert text[start:end] == document_block()
    assert text.count(BEGIN_MARKER) == text.count(END_MARKER) == 1


def test_every_transition_is_drawn() -> None:
    """Docs: each (state, event) -> state row of TRANSITIONS appears as a labelled edge."""
    diagram = render_mermaid(TRANSITIONS, CredentialState, CredentialState.NONE)
    edges = {line.strip() for line in diagram.splitlines()}
    for (source, kind), target in TRANSITIONS.items():
        assert any(
            edge.startswith(f"{source.value} --> {target.value}:") and kind.__name__ in edge
            for edge in edges
        )
    assert "revoked --> [*]" in edges


def test_running_the_module_prints_the_block() -> None:
    """Docs: `python -m routeledger.core.credentials.diagram` prints the block to paste."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        # runpy warns that the module is already imported (by this test); harmless.
        warnings.filterwarnings("ignore", "'routeledger.core.credentials.diagram' found")
        runpy.run_module("routeledger.core.credentials.diagram", run_name="__main__")
    assert out.getvalue() == document_block()
