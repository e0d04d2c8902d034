"""fastsde.runs: results saved in parts as they come, a rerun refused unless made alike, the gaps of
a run cut short found, the parts merged once (and merged right if a merge was cut short)."""

import json
import os
import signal
import time

import numpy as np
import pytest

from fastsde import runs


def part(out, indices, name="r"):
    with runs.Saver(str(out), name) as saver:
        saver.add(indices, value=np.asarray(indices, dtype=np.float32) * 10, pair=np.zeros((len(indices), 2)))


def test_saver_saves_on_its_timer_and_on_the_way_out_of_an_error(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(runs.time, "time", lambda: clock[0])
    with pytest.raises(KeyboardInterrupt):
        with runs.Saver(str(tmp_path), "r", seconds=60) as saver:
            saver.add([0, 1], value=np.array([0.0, 1.0]))
            clock[0] = 59.0
            saver.add([2], value=np.array([2.0]))
            assert not os.listdir(tmp_path)  # not a minute yet
            clock[0] = 60.0
            saver.add([3], value=np.array([3.0]))
            assert sorted(os.listdir(tmp_path)) == ["r_part000000000.npz"]
            saver.add([4], value=np.array([4.0]))
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["r_part000000000.npz", "r_part000000004.npz"]
    with np.load(tmp_path / "r_part000000000.npz") as f:
        assert f["indices"].tolist() == [0, 1, 2, 3] and f["value"].tolist() == [0, 1, 2, 3]
    assert runs.done(str(tmp_path), "r", "value") == {0, 1, 2, 3, 4}


def test_saver_saves_when_terminated_and_then_exits(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        with runs.Saver(str(tmp_path), "r", seconds=1e9) as saver:
            saver.add([0, 1], value=np.array([0.0, 1.0]))
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode; never this long
    assert stop.value.code == 128 + signal.SIGTERM
    assert runs.done(str(tmp_path), "r", "value") == {0, 1}
    assert signal.getsignal(signal.SIGTERM) == before


def test_todo_fills_the_gaps_of_a_longer_run_cut_short(tmp_path):
    part(tmp_path, [0, 1, 5])
    assert runs.todo(str(tmp_path), "r", "value", 3) == ([2, 3, 4], 6)  # item 5 is kept, so 2..4 are computed
    with pytest.raises(ValueError, match=r"r \[2, 3, 4\] are missing \(3 of 0..5 there\)"):
        runs.merge(str(tmp_path), "r")
    part(tmp_path, [3, 2, 4])
    merged = runs.merge(str(tmp_path), "r")
    assert merged["value"].tolist() == [0, 10, 20, 30, 40, 50] and merged["pair"].shape == (6, 2)
    assert sorted(os.listdir(tmp_path)) == ["r.npz"] and runs._rows(str(tmp_path / "r.npz"), "value") == 6
    assert runs.todo(str(tmp_path), "r", "value", 8) == ([6, 7], 8)


def test_merge_keeps_one_copy_of_items_saved_twice(tmp_path):
    # A merge stopped after writing r.npz but before deleting the parts leaves both.
    part(tmp_path, [0, 1, 2, 3])
    runs.save_npz(str(tmp_path / "r.npz"), value=np.array([0, 10, 20], np.float32), pair=np.zeros((3, 2)))
    assert runs.done(str(tmp_path), "r", "value") == {0, 1, 2, 3}
    assert runs.merge(str(tmp_path), "r")["value"].tolist() == [0, 10, 20, 30]
    assert runs.merge(str(tmp_path), "r")["value"].tolist() == [0, 10, 20, 30]  # merged already: unchanged
    with pytest.raises(FileNotFoundError, match="no r.npz or r_part"):
        runs.merge(str(tmp_path / "empty"), "r")


def test_a_run_resumes_only_when_made_alike(tmp_path):
    out, settings = str(tmp_path), {"seed": 0, "precision": "fp32", "config": {"nf": 16, "mult": (1, 2)}}
    runs.start(out, "r", settings).close()
    part(tmp_path, [0])
    runs.start(out, "r", {"seed": 0, "precision": "fp32", "config": {"nf": 16, "mult": [1, 2]}}).close()  # JSON-equal
    with pytest.raises(
        ValueError,
        match=r"holds r of another run \(precision: 'fp32' there, 'bf16' here; "
        r"seed: 0 there, 1 here\).*--overwrite",
    ):
        runs.start(out, "r", {**settings, "seed": 1, "precision": "bf16"})
    with pytest.raises(ValueError, match=r"\(config.long differs; config.nf: 16 there, 32 here\)"):
        runs.start(out, "r", {**settings, "config": {"nf": 32, "mult": [1, 2], "long": "x" * 60}})
    with pytest.raises(ValueError, match=r"\(extra: None there, 1 here\)"):
        runs.start(out, "r", {**settings, "extra": 1})
    assert runs.done(out, "r", "value") == {0}
    (tmp_path / "r.png").write_bytes(b"a picture of the old results")
    (tmp_path / "other.txt").write_text("kept")
    runs.start(out, "r", {**settings, "seed": 1}, overwrite=True, also=["r.png"]).close()
    assert sorted(os.listdir(tmp_path)) == [".r.lock", "other.txt", "r.json"]
    assert json.load(open(tmp_path / "r.json"))["seed"] == 1
    # Results without a r.json (another tool's, or an older fastsde's) are never taken for this run's.
    os.unlink(tmp_path / "r.json")
    runs.save_npz(str(tmp_path / "r.npz"), value=np.zeros(2))
    with pytest.raises(ValueError, match="holds r but no r.json"):
        runs.start(out, "r", settings)
    # A record that is not JSON is named, not taken for another run's.
    os.unlink(tmp_path / "r.npz")
    for text in ('{"seed": 0, "prec', "[1, 2]"):
        (tmp_path / "r.json").write_text(text)
        with pytest.raises(ValueError, match=r"r.json: not (readable as JSON|a JSON object).*--overwrite"):
            runs.start(out, "r", settings)


def test_a_run_is_held_by_one_process_at_a_time(tmp_path):
    out = str(tmp_path)
    with runs.start(out, "r", {"seed": 0}):
        for settings in ({"seed": 0}, {"seed": 1}):  # alike or not: refused while the first holds it
            with pytest.raises(runs.Busy, match=rf"in use: another process \(pid {os.getpid()}\) is writing its r"):
                runs.start(out, "r", settings)
        with pytest.raises(runs.Busy):
            runs.claim(out, "r")
    with runs.start(out, "r", {"seed": 0}):  # released on leaving the block
        pass


def _race(out, seed, count, ready, go, results):
    """A run of `count` items valued `seed`, started at `go`: 0 if it finished, 1 if refused."""
    ready.wait()
    go.wait()
    try:
        with runs.start(out, "r", {"seed": seed}):
            missing, _ = runs.todo(out, "r", "value", count)
            for k in range(0, len(missing), 2):
                with runs.Saver(out, "r", seconds=0) as saver:
                    saver.add(missing[k : k + 2], value=np.full(len(missing[k : k + 2]), seed))
            runs.merge(out, "r")
        results.put((seed, 0))
    except ValueError:
        results.put((seed, 1))


def test_racing_runs_with_other_settings_never_mix_their_results(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(20):
        out = str(tmp_path / str(attempt))
        ready, go, results = ctx.Barrier(3), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(out, seed, count, ready, go, results)) for seed, count in ((0, 8), (1, 24))
        ]
        for p in procs:
            p.start()
        ready.wait()
        go.set()
        for p in procs:
            p.join(60)
        outcome = dict(results.get(timeout=10) for _ in procs)
        (winner,) = [seed for seed, code in outcome.items() if code == 0]
        merged = runs.merge(out, "r")["value"]
        assert len(merged) == (8, 24)[winner] and set(merged.tolist()) == {winner}
        assert json.load(open(os.path.join(out, "r.json")))["seed"] == winner
