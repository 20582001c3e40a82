"""The notebooks execute end to end (nbclient), at small sizes."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", ["vit_depth_width_sweep.ipynb",
                                  "cost_indicators_disagree.ipynb"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFMETRICS_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("EFFMETRICS_NOTEBOOK_STORE", str(tmp_path / "nb.sqlite"))
    monkeypatch.setenv("EFFMETRICS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.path.join(ROOT, "python"))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs and not any(o.get("output_type") == "error" for o in outputs)
