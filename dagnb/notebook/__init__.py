"""The notebook front end: the ``%%dagger`` magics, the cell <-> Step codec, the kernel's
session graph, the widgets and the builder. The only layer (with the CLI) that imports
IPython and ipywidgets; it may import every layer below."""
