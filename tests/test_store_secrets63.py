"""Which store secrets a run masks: a real one of any length, not a local server's
stand-in (moto's ``testing``, MinIO's ``minioadmin``)."""

from __future__ import annotations

import pytest

from dagnb.config import settings


def test_a_short_real_store_secret_is_still_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-hosted store's password may be short (a length bound let one through)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio-pass-13")
    assert settings().credential_secrets("s3://bucket/cache") == {
        "AWS_SECRET_ACCESS_KEY": "minio-pass-13"}


@pytest.mark.parametrize("stand_in", ["testing", "minioadmin", "test"])
def test_a_local_servers_stand_in_is_no_secret(monkeypatch: pytest.MonkeyPatch,
                                               stand_in: str) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stand_in)
    assert settings().credential_secrets("s3://bucket/cache") == {}
