"""tests/unit needs no prepared data: every test here sees an empty data directory, so a test
that reads a real dataset fails here and belongs in tests/e2e."""

import pytest


@pytest.fixture(autouse=True)
def _no_prepared_data(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JAXTRAIN_DATA_DIR", str(tmp_path_factory.mktemp("no_data")))
