"""The runtime layer: preparing a run, the async scheduler, `Run`, events and DataFrame
frames, and plan/explain/warm. Imports `executors` and below."""
