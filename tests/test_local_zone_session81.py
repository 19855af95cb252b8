"""The frames' times are in the machine's zone as the standard library's zoneinfo reads
it: pandas 2 (Python 3.10's) cannot read the zones of dateutil 3, which pip installs
with it wherever nothing pins dateutil (no botocore): every time came out naive, and a
traceback was printed for each frame. dateutil's zones stay where zoneinfo has none."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dagnb.cache import housekeeping
from dagnb.cache.housekeeping import local_times, local_zone

TOKYO = Path("/usr/share/zoneinfo/Asia/Tokyo")
WINTER = datetime(2026, 1, 15, 12, tzinfo=timezone.utc).timestamp()
SUMMER = datetime(2026, 7, 15, 12, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch):
    """Set ``TZ`` (None: unset) for the test, the C library told too."""
    def set_zone(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("TZ", raising=False)
        else:
            monkeypatch.setenv("TZ", value)
        time.tzset()
    yield set_zone
    monkeypatch.undo()
    time.tzset()


def offsets(seconds: list[float]) -> list[timedelta | None]:
    return [value.utcoffset() for value in local_times(seconds)]


@pytest.mark.parametrize("name", ["America/New_York", ":America/New_York"])
def test_a_zone_named_in_tz_is_zoneinfo_s_and_each_time_has_its_season_s_offset(
        zone, name: str) -> None:
    zone(name)
    assert type(local_zone()).__module__ == "zoneinfo"
    assert str(local_zone()) == "America/New_York"
    assert offsets([WINTER, SUMMER]) == [timedelta(hours=-5), timedelta(hours=-4)]


@pytest.mark.skipif(not TOKYO.exists(), reason="no system zone files (/usr/share/zoneinfo)")
def test_tz_set_empty_is_utc_as_the_c_library_reads_it(
        zone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    localtime = tmp_path / "localtime"
    localtime.symlink_to(TOKYO)  # (not what an empty TZ means)
    monkeypatch.setattr(housekeeping, "_LOCALTIME", str(localtime))
    zone("")
    assert offsets([WINTER]) == [timedelta(0)] == [
        datetime.fromtimestamp(WINTER).astimezone().utcoffset()]


def test_a_posix_rule_in_tz_is_dateutil_s_local_zone_its_times_aware_all_the_same(
        zone) -> None:
    """(dateutil's ``gettz`` reads the rule too, but no pandas converts to that zone.)"""
    zone("EST5EDT,M3.2.0,M11.1.0")
    assert type(local_zone()).__name__ == "tzlocal"
    assert offsets([WINTER, SUMMER]) == [timedelta(hours=-5), timedelta(hours=-4)]


@pytest.mark.skipif(not TOKYO.exists(), reason="no system zone files (/usr/share/zoneinfo)")
def test_a_zone_file_s_path_in_tz_is_that_zone(zone) -> None:
    zone(str(TOKYO))
    assert str(local_zone()) == "Asia/Tokyo"
    assert offsets([WINTER, SUMMER]) == [timedelta(hours=9)] * 2


@pytest.mark.skipif(not TOKYO.exists(), reason="no system zone files (/usr/share/zoneinfo)")
@pytest.mark.parametrize("how", ["link", "copy"])
def test_with_tz_unset_the_zone_is_etc_localtime_s_a_link_s_by_its_name(
        zone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    localtime = tmp_path / "localtime"
    if how == "link":
        localtime.symlink_to(TOKYO)
    else:  # (a copy names no zone: read from the file)
        shutil.copy(TOKYO, localtime)
    monkeypatch.setattr(housekeeping, "_LOCALTIME", str(localtime))
    zone(None)
    assert str(local_zone()) == ("Asia/Tokyo" if how == "link" else "localtime")
    assert offsets([WINTER, SUMMER]) == [timedelta(hours=9)] * 2


def test_a_missing_time_stays_missing(zone) -> None:
    zone("America/New_York")
    times = local_times([WINTER, None, float("nan")])
    assert times.isna().tolist() == [False, True, True]


@pytest.mark.skipif(not TOKYO.exists(), reason="no system zone files (/usr/share/zoneinfo)")
def test_the_zone_is_kept_until_tz_or_etc_localtime_changes(
        zone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    localtime = tmp_path / "localtime"
    localtime.symlink_to(TOKYO)
    monkeypatch.setattr(housekeeping, "_LOCALTIME", str(localtime))
    zone(None)
    first = local_zone()
    assert local_zone() is first and str(first) == "Asia/Tokyo"
    replaced = tmp_path / "replaced"  # (as timedatectl does: a new link renamed in)
    replaced.symlink_to(TOKYO.parent.parent / "America" / "New_York")
    replaced.rename(localtime)
    assert str(local_zone()) == "America/New_York"
    zone("Europe/Paris")
    assert str(local_zone()) == "Europe/Paris"
