"""Counting JAX's trace and compile events in a block, for the zero-recompile tests.

JAX's monitoring events for every jaxpr trace and backend compile
(``/jax/core/compile/jaxpr_trace_duration``, ``/jax/core/compile/backend_compile_duration``) see
every program, including those with no user function (nonsmooth.solve, the CLI).
"""

import contextlib

import jax

TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def jax_events():
    """Counts of JAX's trace and compile events inside the block: ``{"trace": n, "compile": m}``."""
    counts = {"trace": 0, "compile": 0}
    names = []

    def listener(event, duration, **kwargs):
        if event == TRACE:
            counts["trace"] += 1
            names.append(("trace", kwargs.get("fun_name")))
        elif event == COMPILE:
            counts["compile"] += 1
            names.append(("compile", kwargs.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    counts["names"] = names
