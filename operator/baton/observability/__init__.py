"""What an SRE watches: Grafana dashboards and Prometheus alerting rules, generated from code.

Both are rendered into the Helm chart (`baton generate`) so that the JSON and YAML an installation
uses are never edited by hand, and tests can check them against the metrics baton really exports.
"""
