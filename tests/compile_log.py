"""Count XLA compilations inside a block, by the name of the compiled function."""

import contextlib

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Yield a list that collects the function name of every compilation in the block
    (``jit(f)`` is listed as ``f``)."""
    names = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            name = str(kwargs.get("fun_name", "?"))
            names.append(name[4:-1] if name.startswith("jit(") else name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
