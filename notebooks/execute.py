"""Executes a notebook headless with nbclient; the executed copy goes to notebooks/out/."""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

src = pathlib.Path(sys.argv[1]).resolve()
nb = nbformat.read(src, as_version=4)
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(src.parent)}}).execute()
out = src.parent / "out" / (src.stem + ".executed.ipynb")
out.parent.mkdir(exist_ok=True)
nbformat.write(nb, out)
print(f"executed {src.name} → {out}")
