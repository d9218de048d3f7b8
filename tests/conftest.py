import os

# The suite runs in two processes (pytest-xdist, see pyproject.toml): on an accelerator, each
# takes memory as it needs it instead of 75% of the device up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import hypothesis  # noqa: E402
import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import equisae as eqs  # noqa: E402

# Exact float32 matrix products on every backend (no TF32 on a GPU).
jax.config.update("jax_default_matmul_precision", "highest")

# `ci`: few, reproducible examples; the first example of each test pays the JIT compile, so no
# deadline. `thorough`: many more examples, for a GPU machine (HYPOTHESIS_PROFILE=thorough;
# HYPOTHESIS_EXAMPLES sets how many, 300 by default: benchmarks/gpu.sh keeps it to a few minutes).
hypothesis.settings.register_profile(
    "ci",
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
    "thorough",
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 300)),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def smooth_problem():
    """Band-limited concepts (bandwidth 8) and one spike per sample on a lattice of 32 points:
    exactly the same functions at every grid size."""
    concepts = eqs.data.smooth(jr.key(0), 4, bandwidth=8)
    return eqs.data.FunctionalModel(concepts, spikes=1, lattice=32)


@pytest.fixture(scope="session")
def trained_sae_fno(smooth_problem):
    """An SAE-FNO (9 modes, unrolled FISTA) trained at n = 32 on the smooth problem."""
    grid = eqs.Grid(32)
    sample = smooth_problem.sample(jr.key(1), 4000, grid)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), 50), eqs.Spectral(grid, 1, 4, 9, key=jr.key(2))
    )
    sae, history = eqs.fit(
        sae,
        sample.signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, 1500)),
        steps=1500,
        batch_size=32,
        key=jr.key(3),
        loss=eqs.SAELoss(l1=0.05),
        progress=False,
    )
    return sae, grid, sample


@pytest.fixture(scope="session")
def vector_problem():
    """The standard vector problem: m=50, p=100, s=5, amplitudes U[1,2] with random sign."""
    model = eqs.data.VectorModel(jr.key(0), dim=50, concepts=100, sparsity=5)
    return model, model.sample(jr.key(1), 8000)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each program compiled for the CPU keeps its own memory mappings until it is freed, and the
    whole suite compiles thousands of them: without this, one process passes the kernel's limit
    of 65 530 mappings (`vm.max_map_count`) near the end of the run and XLA aborts in a compile.
    """
    yield
    jax.clear_caches()
