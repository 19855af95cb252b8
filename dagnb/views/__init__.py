"""The views layer: the live-state fold and the plain-text view, the CLI progress table, the
graph picture. Views only read the event log and `Run`; they compute no state of their own.
Imports `runtime` and below, never IPython or ipywidgets."""
