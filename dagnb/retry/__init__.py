"""The retry layer: classifying errors as transient or permanent, `RetryPolicy` on tenacity,
the `@retry` decorator and the per-executor circuit breaker. Imports `cache` and below.

``dagnb.retry`` (the attribute of the package ``dagnb``) is the decorator; this package
is reached by its submodules: ``dagnb.retry.policy``, ``dagnb.retry.breaker``."""
