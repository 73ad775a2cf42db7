"""`make demo` end to end, small: train, export, serve, answer a known and a cold user over gRPC, then a
cold user turned warm by three clicks through the HTTP service with Redis as the store, stop."""
import re
import subprocess
import sys


def test_demo_answers_a_known_and_a_cold_user_over_grpc_and_stops_the_server(tmp_path):
    work = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "tfrs_recsys.demo", "--workdir", str(work), "--users", "300",
                           "--items", "80", "--epochs", "2", "--k", "5"],
                          capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    for step in range(1, 9):
        assert f"== [{step}/8]" in out
    offline, online = out.split("== [7/8]")
    known, cold = offline.split("(retrieval top-100 -> DeepFM):")[1].split("(cold start: global hot items):")
    ranked = re.findall(r"^\s+\d\. item\s+(\S+)\s+(.+?)\s+from (recall|hot)\s+pCTR (\d\.\d+)$", known, re.M)
    hot = re.findall(r"^\s+\d\. item\s+(\S+)\s+(.+?)\s+from hot\s+hotness ([\d.]+)$", cold, re.M)
    seen = re.findall(r"^\s+item\s+(\S+)\s+(.+)$", known.split("recommended:")[0], re.M)
    assert len(ranked) == 5 and len(hot) == 5 and 1 <= len(seen) <= 5
    # every item is shown with its title (the synthetic catalog's titles name the item and its genres)
    assert all(label.startswith(f"Item {item} (") for item, label, *_ in ranked + hot + seen)
    scores = [float(s) for *_, s in ranked]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)
    assert [float(h) for *_, h in hot] == sorted((float(h) for *_, h in hot), reverse=True)
    assert "cuInit" not in done.stderr and "op_level_cost_estimator" not in done.stderr  # noise filtered
    assert (work / "models" / "models.config").is_file()  # written by the exports, served as it is
    assert (work / "models" / "retrieval" / "1" / "saved_model.pb").is_file()
    assert (work / "models" / "retrieval_portable" / "1" / "saved_model.pb").is_file()
    assert (work / "models" / "deepfm" / "1" / "saved_model.pb").is_file()
    assert "Demo finished" in out

    before, after = online.split("POST ")
    assert "(before, served from Redis: cold start: global hot items):" in before
    assert len(re.findall(r"^\s+\d\. item\s+\S+\s+.+?\s+from hot\s+hotness [\d.]+$", before, re.M)) == 5
    clicked = re.search(r"3 clicks on items (\S+), (\S+), (\S+) -> \{'applied': 3", after).groups()
    assert "(after 3 clicks, served from Redis: retrieval top-100 -> DeepFM):" in after
    warm = re.findall(r"^\s+\d\. item\s+(\S+)\s+.+?\s+from (?:recall|hot)\s+pCTR (\d\.\d+)$", after, re.M)
    assert len(warm) == 5 and not set(clicked) & {item for item, _ in warm}
    seen_after = re.findall(r"^\s+item\s+(\S+)\s+", after.split("recommended:")[0], re.M)
    assert seen_after == list(clicked)  # the user's history in Redis: the three clicks
    assert re.search(r"/health: redis ok \(\d+\.\d+ ms\), published version 1", after)
