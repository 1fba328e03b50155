"""Shared test setup.

- Puts the repo root on ``sys.path`` so ``import anytalker_core`` works from any working directory.
- ``SHARED`` is the folder of golden fixtures beside the repo (``../shared``). CI has it; a fresh clone may not.
  Mark tests that need it with ``@requires_shared`` (or ``@pytest.mark.requires_shared``): they are skipped,
  with the reason shown, when the folder is absent. The ``shared`` fixture gives the path and skips likewise.

tests/ has no ``__init__.py`` on purpose (see pyproject.toml), so this module is importable as ``conftest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_MISSING_REASON = "../shared not found: golden fixtures live there; CI has it"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

requires_shared = pytest.mark.requires_shared


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_shared") is not None and not SHARED.is_dir():
        pytest.skip(SHARED_MISSING_REASON)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING_REASON)
    return SHARED
