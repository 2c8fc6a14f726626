"""Test-wide settings: strict rank promotion, CPU only."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
