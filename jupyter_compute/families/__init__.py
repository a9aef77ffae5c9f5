"""Every kind of compute jupyter_compute knows, one package per family.

Each package holds everything about its family (backend, specs, supervisor, routes, and the code
that runs on the far side, in modules named for where they run) and registers itself through the
``jupyter_compute.families`` entry point with a ``family()`` that returns its ``core.registry.Family``.
"""
