"""Text edited inside an index data file is reported, never served."""

from __future__ import annotations

from pathlib import Path

from conftest import write_tree

from ctxsvc.service import ContextService

MARKER = b"integrity_marker_alpha"
EDITED = b"integrity_marker_omega"


def _edit_chunk_data(home: Path, name: str) -> int:
    """Replace MARKER by EDITED (same length) in the chunk table's data files, in place."""
    edited = 0
    for data in (home / "lance" / f"{name}__chunks.lance" / "data").glob("*.lance"):
        raw = data.read_bytes()
        if MARKER in raw:
            data.write_bytes(raw.replace(MARKER, EDITED))
            edited += 1
    return edited


def test_a_chunk_whose_text_no_longer_matches_its_hash_is_not_served(
    service: ContextService, tmp_path: Path
) -> None:
    root = tmp_path / "proj"
    write_tree(
        root,
        {
            "billing.py": (
                "def integrity_marker_alpha(total):\n"
                '    """Charge the customer the total."""\n'
                "    return total * 2\n"
            ),
            "other.py": "def unrelated(x):\n    return x + 1\n\n\ndef more(y):\n    return y\n",
        },
    )
    service.index(root, "proj")
    assert _edit_chunk_data(service.settings.home, "proj") >= 1

    view = service.view(service.resolve("proj"))
    assert "billing.py" in view.damaged
    assert "content hash" in view.damaged["billing.py"]
    assert "other.py" not in view.damaged
    assert not view.file_lines("billing.py")  # nothing of the file is served

    pack = service.context("proj", "integrity marker charge the customer", 2000)
    texts = "".join(item.text for item in pack.items)
    assert EDITED.decode() not in texts
    assert MARKER.decode() not in texts
    assert any("billing.py" in d and "rebuild" in d for d in pack.degraded), pack.degraded
    assert "proj" in service.damaged()
