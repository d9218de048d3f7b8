import os

import hypothesis
import jax
import jax.random as jr
import pytest

import equisae as eqs

# Exact float32 matrix products on every backend (no TF32 on a GPU).
jax.config.update("jax_default_matmul_precision", "highest")

# `ci`: few, reproducible examples; the first example of each test pays the JIT compile, so no
# deadline. `thorough`: many more examples, for a GPU machine (HYPOTHESIS_PROFILE=thorough).
hypothesis.settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def vector_problem():
    """The standard vector problem: m=50, p=100, s=5, amplitudes U[1,2] with random sign."""
    model = eqs.data.VectorModel(jr.key(0), dim=50, concepts=100, sparsity=5)
    return model, model.sample(jr.key(1), 8000)
