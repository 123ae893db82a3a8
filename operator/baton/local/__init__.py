"""Local mode (`baton up`): the laptop shell over the same rollout and analysis core as the operator.

It reads the YAML a cluster would take, keeps spec and status in a state directory, serves every
domain through a real Ray Serve on localhost and carries out the rollout core's actions itself.
"""
