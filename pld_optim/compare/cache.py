"""Each optimizer compiles on its own part of the LM cache, so compile costs compare.

With one shared cache, an optimizer that runs after another one making the same calls (InferRules after
BootstrapFewShot bootstraps the same traces; PLD's baseline after the CLI's zero-shot check; pld-rules-only
after pld mines the same rules) would get them free, and its cost would depend on the order of
`--optimizers`. Here every key DSPy's cache reads or writes during one optimizer's compile carries that
optimizer's name: its cache hits are its own repeats (or its own earlier, interrupted run's), as for a user
running it alone. Its seeds share it, so a later seed replays what they have in common (which is why
compare's compile cost is its first seed's). The entries stay in the one cache folder the run owns.
"""

from __future__ import annotations

from contextlib import contextmanager

import dspy

KEY = "_pld_compare_optimizer"


class _Namespaced:
    """DSPy's cache (`dspy.cache`) with `namespace` added to every request it keys."""

    def __init__(self, cache, namespace: str):
        self._cache, self._namespace = cache, namespace

    def _request(self, request):
        return {**request, KEY: self._namespace} if isinstance(request, dict) else request

    def get(self, request, *args, **kwargs):
        return self._cache.get(self._request(request), *args, **kwargs)

    def put(self, request, value, *args, **kwargs):
        return self._cache.put(self._request(request), value, *args, **kwargs)

    def cache_key(self, request, *args, **kwargs):
        return self._cache.cache_key(self._request(request), *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cache, name)


@contextmanager
def own_cache(namespace: str):
    """Run the block on `namespace`'s part of DSPy's current cache (in memory and on disk)."""
    shared = dspy.cache
    dspy.cache = _Namespaced(shared, namespace)
    try:
        yield
    finally:
        dspy.cache = shared
