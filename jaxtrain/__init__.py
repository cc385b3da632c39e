"""jaxtrain: a JAX research training framework."""

from jaxtrain.parallel.host_memory import keep_step_buffers_resident

__version__ = "0.1.0"

# Before JAX's CPU backend starts its threads: see jaxtrain/parallel/host_memory.py.
keep_step_buffers_resident()
