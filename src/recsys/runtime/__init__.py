"""The code that runs inside Triton's python backend, and the numpy transforms it shares.

Everything in this folder runs in NVIDIA's Triton container: Python 3.10, numpy and
FAISS, no torch, no pandas, no tritonclient. The offline two-stage recommender uses
the same functions (aggregation, MMR, tie order, window counts), so the served lists
and the offline ones come from one implementation.

* :mod:`recsys.runtime.aggregation` -- weighted relevance, freshness, MMR, filters.
* :mod:`recsys.runtime.ranking` -- the served aggregation settings and top-k.
* :mod:`recsys.runtime.windows` -- activity counts in time windows.
* :mod:`recsys.runtime.ranker_features` -- the ranker's inputs at request time.
* :mod:`recsys.runtime.user_state` -- users from the tables or the live profile store.
* :mod:`recsys.runtime.engine` -- the ``recommend`` request logic.
* :mod:`recsys.runtime.faiss_search` -- the ``retrieval`` model's search.
* :mod:`recsys.runtime.python_backend` -- tensor I/O, errors and BLS calls.

The boundary is this folder: ``tests/runtime/test_boundary.py`` checks that every
module here imports only the standard library, numpy, FAISS, Triton's
``triton_python_backend_utils`` and this package at module level (the profile store
modules load lazily, when a store is configured), and that importing all of them
pulls in neither torch nor tritonclient. Nothing here imports a layer above
``features`` at module level.
"""
