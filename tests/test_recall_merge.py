"""The candidate list handed to the ranker: retrieval top-N with global hot items, by ratio or positions."""
import argparse

import pytest

from tfrs_recsys.config import ConfigError
from tfrs_recsys.serving.recall_merge import (
    RecallMergeConfig,
    add_recall_merge_arguments,
    merge_candidates,
    recall_merge_from_args,
)

RECALLED = [f"r{i}" for i in range(20)]
HOT = [f"h{i}" for i in range(10)]


def _sources(merged):
    return "".join("H" if source == "hot" else "R" for _, source in merged)


def test_none_keeps_the_retrieval_list():
    merged = merge_candidates(RECALLED, HOT, 8, RecallMergeConfig())
    assert merged == [(item, "recall") for item in RECALLED[:8]]


@pytest.mark.parametrize("n, ratio, hot_count, pattern", [
    (10, 0.2, 2, "RRRRHRRRRH"),  # one slot in five
    (10, 0.5, 5, "RHRHRHRHRH"),
    (7, 0.2, 1, "RRRRHRR"),  # floor(7 * 0.2)
    (100, 0.29, 29, None),  # 0.29 * 100 is 28.999... in floating point: still 29 slots
    (6, 0.0, 0, "RRRRRR"),
    (4, 1.0, 4, "HHHH"),
])
def test_ratio_places_floor_n_times_ratio_hot_items_evenly(n, ratio, hot_count, pattern):
    merged = merge_candidates([f"r{i}" for i in range(n)], [f"h{i}" for i in range(n)], n,
                              RecallMergeConfig("ratio", hot_ratio=ratio))
    assert len(merged) == n
    assert _sources(merged).count("H") == hot_count
    if pattern:
        assert _sources(merged) == pattern
    # each source keeps its own order: best retrieved first, hottest first
    assert [i for i, s in merged if s == "recall"] == [f"r{i}" for i in range(_sources(merged).count("R"))]
    assert [i for i, s in merged if s == "hot"] == [f"h{i}" for i in range(_sources(merged).count("H"))]


def test_positions_are_one_based_and_slots_past_the_list_are_unused():
    merged = merge_candidates(RECALLED, HOT, 8, RecallMergeConfig("positions", hot_positions=(3, 7, 12)))
    assert [i for i, _ in merged] == ["r0", "r1", "h0", "r2", "r3", "r4", "h1", "r5"]
    assert _sources(merged) == "RRHRRRHR"


def test_an_item_in_both_lists_appears_once_at_its_first_slot():
    recalled = ["a", "b", "c", "d", "e", "f"]
    hot = ["c", "x", "a", "y"]
    # hot slots 2 and 5: slot 2 takes "c" (hot); "c" is then skipped in recall; slot 5's hot "a" was
    # placed by recall at slot 1, so the next hot item "y" takes it.
    merged = merge_candidates(recalled, hot, 6, RecallMergeConfig("positions", hot_positions=(2, 5)))
    assert merged == [("a", "recall"), ("c", "hot"), ("b", "recall"), ("d", "recall"), ("x", "hot"),
                      ("e", "recall")]
    ids = [i for i, _ in merged]
    assert len(ids) == len(set(ids))


def test_history_never_enters_through_the_hot_list():
    history = {"h0", "h2"}
    merged = merge_candidates(RECALLED, HOT, 10, RecallMergeConfig("ratio", hot_ratio=0.3), exclude=history)
    hot = [i for i, s in merged if s == "hot"]
    assert hot == ["h1", "h3", "h4"] and not history & {i for i, _ in merged}


def test_num_hot_limits_the_hot_pool_to_the_hottest_unseen_items():
    merged = merge_candidates(RECALLED, HOT, 10, RecallMergeConfig("ratio", hot_ratio=0.5, num_hot=2),
                              exclude={"h0"})
    assert [i for i, s in merged if s == "hot"] == ["h1", "h2"]
    assert len(merged) == 10  # the hot slots left empty go to retrieval candidates
    assert [i for i, s in merged if s == "recall"] == RECALLED[:8]


def test_fewer_candidates_than_asked():
    # hot items run out: their slots go to retrieval candidates
    merged = merge_candidates(RECALLED, ["h0"], 6, RecallMergeConfig("ratio", hot_ratio=0.5))
    assert merged == [("r0", "recall"), ("h0", "hot"), ("r1", "recall"), ("r2", "recall"), ("r3", "recall"),
                      ("r4", "recall")]
    # retrieval runs out (a small catalog): hot items fill in, and the list ends when both are spent
    merged = merge_candidates(["r0", "r1"], ["h0", "r1", "h1"], 8,
                              RecallMergeConfig("positions", hot_positions=(1,)))
    assert merged == [("h0", "hot"), ("r0", "recall"), ("r1", "recall"), ("h1", "hot")]
    assert merge_candidates([], [], 5, RecallMergeConfig("ratio")) == []
    assert merge_candidates(RECALLED, HOT, 0, RecallMergeConfig("ratio")) == []


@pytest.mark.parametrize("kwargs, field", [
    ({"strategy": "mix"}, "strategy"),
    ({"strategy": "ratio", "hot_ratio": 1.5}, "hot_ratio"),
    ({"strategy": "ratio", "hot_ratio": -0.1}, "hot_ratio"),
    ({"strategy": "positions"}, "hot_positions"),
    ({"strategy": "positions", "hot_positions": (0, 3)}, "hot_positions"),
    ({"strategy": "positions", "hot_positions": (3, 3)}, "hot_positions"),
    ({"strategy": "ratio", "num_hot": -1}, "num_hot"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        RecallMergeConfig(**kwargs)


def test_flags_build_the_config():
    parser = argparse.ArgumentParser()
    add_recall_merge_arguments(parser)
    assert recall_merge_from_args(parser.parse_args([])) == RecallMergeConfig()
    args = parser.parse_args(["--recall-merge", "positions", "--hot-positions", "3, 7", "--num-hot", "50"])
    assert recall_merge_from_args(args) == RecallMergeConfig("positions", hot_positions=(3, 7), num_hot=50)
    args = parser.parse_args(["--recall-merge", "ratio", "--hot-ratio", "0.25"])
    assert recall_merge_from_args(args) == RecallMergeConfig("ratio", hot_ratio=0.25)
    with pytest.raises(ConfigError, match="field 'hot_positions'.*'3;7'"):
        recall_merge_from_args(parser.parse_args(["--recall-merge", "positions", "--hot-positions", "3;7"]))
