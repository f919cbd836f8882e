"""Adaptive minibatching: the queue and timer (``batcher``), the pure row arithmetic
(``rows``) and the online cost model that decides when waiting pays (``cost``)."""
