"""The Colab notebooks: stored without outputs, and run top to bottom in small mode.

Each notebook runs in a fresh `python3` kernel (nbclient) with `LMOPT_NOTEBOOK_SMALL=1`,
the working directory `colab/`, its key figure redirected to a temp folder
(`LMOPT_FIGURE_DIR`) and `TMPDIR`/`IPYTHONDIR` in that folder too, so a run writes
nothing into the repository. Any cell error fails the test; the run time is printed
(`pytest -s`) and recorded in the test's duration.
"""

import os
import pathlib
import time

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
NAMES = ("01_normal_equation", "02_newton_root_finding", "03_hessian_and_gauss_newton",
         "04_what_gradient_descent_needs")
CELL_TIMEOUT_S = 600  # per cell; small mode takes seconds, CI machines may be loaded


def _read(name: str):
  return nbformat.read(COLAB / f"{name}.ipynb", as_version=4)


def _tree(root: pathlib.Path) -> set:
  return {p.relative_to(root) for p in root.rglob("*")}


def test_colab_holds_exactly_the_four_notebooks():
  assert sorted(p.stem for p in COLAB.glob("*.ipynb")) == list(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  assert nb.metadata["kernelspec"]["name"] == "python3"
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  for cell in code:
    assert cell.outputs == [], f"{name}: a code cell holds outputs"
    assert cell.execution_count is None, f"{name}: a code cell holds an execution count"
  setup = code[0].source
  assert "google.colab" in setup and "pip" in setup and "jax.devices()" in setup
  assert any('os.environ.get("LMOPT_NOTEBOOK_SMALL") == "1"' in c.source for c in code)
  assert any(f'"{name}.png"' in c.source for c in code), f"{name}: no key figure saved"
  assert sum(cell.cell_type == "markdown" for cell in nb.cells) >= 4


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_small_mode(name, tmp_path):
  figures, scratch = tmp_path / "figures", tmp_path / "scratch"
  scratch.mkdir()
  pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
  env = {**os.environ, "LMOPT_NOTEBOOK_SMALL": "1", "LMOPT_FIGURE_DIR": str(figures),
         "TMPDIR": str(scratch), "IPYTHONDIR": str(scratch / "ipython"),
         "PYTHONPATH": pythonpath}
  before = _tree(COLAB)
  nb = _read(name)
  client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                          resources={"metadata": {"path": str(COLAB)}})
  start = time.perf_counter()
  client.execute(env=env)  # raises CellExecutionError on the first failing cell
  seconds = time.perf_counter() - start
  print(f"\n{name}: {seconds:.1f} s in small mode")
  errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
            if out.output_type == "error"]
  assert not errors
  assert (figures / f"{name}.png").stat().st_size > 10_000
  assert _tree(COLAB) == before, "the notebook wrote into colab/"
