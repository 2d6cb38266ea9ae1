"""Everything under tests/images builds the container images with buildah and runs them."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/images/" in str(item.path):
            item.add_marker(pytest.mark.images)
