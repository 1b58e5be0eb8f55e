"""Shared pytest fixtures live in tests/fixtures/*, one module per concern, loaded here as plugins."""
pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.demo",
    "tests.fixtures.k8s",
    "tests.fixtures.triton",
    "tests.fixtures.service",
]
