"""The Dagger executor: the engine connection (`connection`), the translation of a task into
a container (`translate`), the in-container Python shim (`shim`), the executor itself and
service containers. Needs ``pip install 'dagnb[dagger]'`` at run time only."""
