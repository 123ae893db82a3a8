"""Metric providers: where the analysis gets its numbers, one module per backend.

Every provider has the same two methods (the flagger model): `query(...)` and `is_online()`.
The decision code never calls a provider: the evidence layer queries, then hands the plain
results (`baton.analysis.measurements`) to the pure gates, so `baton.analysis` does no I/O.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

QueryT_contra = TypeVar("QueryT_contra", contravariant=True)
ResultT_co = TypeVar("ResultT_co", covariant=True)


class MetricProvider(Protocol[QueryT_contra, ResultT_co]):
    """The one interface of every metric backend."""

    def query(self, query: QueryT_contra) -> ResultT_co:
        """Run one query; failures are reported in the result, never raised as a pass."""
        ...

    def is_online(self) -> bool:
        """Whether the backend answers at all (checked before an analysis starts)."""
        ...
