"""baton's data plane: the Ray Serve application that runs inside a model pool.

Installable alone into a Ray image: it never imports the control plane, kopf or kubernetes.
"""
