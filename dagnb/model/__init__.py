"""The model layer: `Step`, `Graph`, the step contract (paths, params, environment), result
files and secret masking. Imports only `errors` and `checks` (Graph's convenience methods
excepted: they reach the runtime, views and workflows at call time)."""
