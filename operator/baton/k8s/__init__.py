"""baton's Kubernetes shell: the kopf operator, its API access, RayService/InferenceService rendering,
ModelSource polling, leader election, and the pool runner that plays KubeRay where no KubeRay runs.

Everything that decides lives in `baton.rollout` (pure); this package only reads and writes the world.
"""
