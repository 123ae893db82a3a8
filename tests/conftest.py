"""Shared pytest set-up: each area of the project contributes its fixtures as a plugin module."""

pytest_plugins = [
    "tests.plugins_serving",
    "tests.testbed.fixtures",
    "tests.plugins_models",
    "tests.integration.operator.fixtures",
]
