"""Export version numbers are never handed out twice from one base path, even after the newest version
folder is moved out (a rollback): two models are never both "v2" in the logs."""
import shutil
import threading
from pathlib import Path

from tfrs_recsys.export.tfserving import existing_versions, publish_version
from tfrs_recsys.export.version_numbers import VERSION_MARKER, highest_version, reserve_version
from tfrs_recsys.servable_layout import version_dirs


def _save(folder: str) -> None:  # the layout's contract only: nothing here loads a model
    Path(folder, "saved_model.pb").write_bytes(b"graph")


def _published(base: Path, name: str = "ranker", **options) -> int:
    return int(Path(publish_version(base, name, _save, **options)).name)


def test_a_version_moved_out_for_a_rollback_is_not_handed_out_again(tmp_path):
    assert [_published(tmp_path) for _ in range(2)] == [1, 2]
    shutil.move(tmp_path / "ranker" / "2", tmp_path / "bad-ranker-2")  # the operator's rollback
    assert existing_versions(tmp_path / "ranker") == [1] and highest_version(tmp_path / "ranker") == 2
    assert _published(tmp_path) == 3
    assert _published(tmp_path, version=7) == 7  # a version given outright is remembered too
    shutil.rmtree(tmp_path / "ranker" / "7")
    assert _published(tmp_path) == 8
    # the marker is a file, no integer: neither a version to the model server nor to the exporter
    assert sorted(version_dirs(tmp_path / "ranker")) == [1, 3, 8]
    assert (tmp_path / "ranker" / VERSION_MARKER).is_file()


def test_a_base_without_the_marker_goes_on_from_its_newest_version(tmp_path):
    for version in (1, 4):  # exported before the marker existed
        _published(tmp_path, version=version)
    (tmp_path / "ranker" / VERSION_MARKER).unlink()
    (tmp_path / "ranker" / "2").mkdir()
    assert _published(tmp_path) == 5


def test_a_pair_reserves_one_number_above_both_members_and_exports_at_once_get_distinct_ones(tmp_path):
    pair = (tmp_path / "rec", tmp_path / "rec_portable")
    _published(tmp_path, "rec_portable", version=3)
    assert reserve_version(*pair) == 4
    shutil.rmtree(pair[1] / "3")
    assert reserve_version(*pair) == 5  # neither member's numbers come back
    numbers, threads = [], [threading.Thread(target=lambda: numbers.append(reserve_version(*pair)))
                            for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(6, 14))


def test_a_marker_that_holds_no_version_number_is_refused_not_guessed(tmp_path):
    import pytest

    from tfrs_recsys.errors import UserError

    assert _published(tmp_path) == 1
    marker = tmp_path / "ranker" / VERSION_MARKER
    for damaged, said in ((b"garbage\x00\xff", "not a version number"),
                          (b"9223372036854775807\n", "not a version the model server reads")):
        marker.write_bytes(damaged)
        with pytest.raises(UserError, match=said):
            _published(tmp_path)
    assert sorted(version_dirs(tmp_path / "ranker")) == [1]
