"""notebooks/walkthrough.ipynb runs from top to bottom on a small folder and shows its pictures."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_runs_on_a_small_folder(make_photo_folder, tmp_path: Path, monkeypatch):
    photos = make_photo_folder(["accordion", "Leopards", "pizza"], 12, name="notebook")
    monkeypatch.setenv("LOOKALIKE_PHOTOS", str(photos))
    monkeypatch.setenv("LOOKALIKE_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("LOOKALIKE_EPOCHS", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    grids = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(grids) == 2 and all(g.count("data:image/jpeg;base64,") == 9 for g in grids)  # query + 8 results
    assert "predicted category:" in grids[1]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the map and the per-category chart
    text = "".join(o.get("text", "") for o in outputs)
    assert "36 photos" in text and "mAP@10" in text
    assert (tmp_path / "work" / "report" / "index.html").exists()
