"""What platform teams and SREs watch, generated from code: dashboards, alerts, health, reference.

- `dashboards`, `alerts`: Grafana dashboards and Prometheus rules, written into the Helm chart by
  `baton generate`, so the JSON and YAML an installation uses are never edited by hand.
- `rollout_metrics`: the control plane's rollout metrics (phase, weight, decisions, scores).
- `catalog`: every metric baton defines; tests check dashboards and rules against it and a real scrape.
- `argocd`: the Argo CD health-check patch; `reference`: the API and metrics reference pages.
"""
