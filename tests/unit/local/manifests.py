"""The smallest valid pool and deployment YAML, shared by the local-mode unit tests."""

POOL = """\
apiVersion: baton.dev/v1alpha1
kind: ModelPool
metadata:
  name: cpu-small
spec:
  accelerator: cpu
"""


def deployment(uri: str, digest: str) -> str:
    return f"""\
apiVersion: baton.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: medical
spec:
  domain: medical
  pool: cpu-small
  model:
    version: v1
    artifact:
      uri: {uri}
      digest: {digest}
      quantization: Q8_0
  analysis:
    ungated: true
"""
