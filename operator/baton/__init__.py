"""baton: serve many small domain models and replace each one when a new version is measurably better.

The control plane lives here: `api` (pydantic types that are the CRD schemas), `rollout`
(the pure state machine), `analysis` (statistics and verdicts), `k8s` (the kopf shell) and
`local` (the laptop shell). The data plane is the separate package `baton_serving`.
"""

__version__ = "0.1.0"
