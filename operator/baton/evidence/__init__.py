"""Evidence, gathered once for both shells: what the core needs measured, measured the same way everywhere.

The rollout core asks (`RunBenchmark`, `ObserveCanary`, `UpdateCandidateStatus`) and judges;
this layer measures and records, between the core and the shells, so `baton up` and the operator
decide the same on the same spec and the same failure. It reads the data plane and writes the
store through two ports (`ports.DataPlane`, `ports.Store`) that the shells provide:

- `releases`: which files or index entries are new model versions (one filename convention).
- `sources`: one ModelSource poll: releases -> candidates, the source's status.
- `samples`: canary samples from the ingress's metrics exposition, per step, and their judgement.
- `benchmarks`: both revisions answer each benchmark; one failure handling.
- `candidates`: a candidate's status as the core decided it, and its benchmark scores.
- `supervision`: how any of these fails: a recorded outcome, an Event, backoff.
- `ingress`: the HTTP adapter of the data plane port; `core`: the core names used here.

Nothing here imports a shell (`baton.k8s`, `baton.local`).
"""
