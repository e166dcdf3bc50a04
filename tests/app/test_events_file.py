"""The events file across restarts, power cuts and rotation (edge.app.events), in-process.

The same faults with the real service as a child process are in test_restarts.py.
"""
import gzip
import json
import os

import numpy as np
import pytest

from edge.app import events as ev
from edge.app.events import EventWriter, TrackIds
from edge.infer.faces import Face


def face(track):
    return Face(np.array([10, 10, 50, 60], np.float32), 0.9, None, "mask", 0.95, track)


def lines_of(path):
    """Every line of an events file and its rotated files (.gz too), oldest first; each must parse."""
    out = []
    for _, rotated in ev.rotated_files(path):
        opener = gzip.open if rotated.endswith(".gz") else open
        with opener(rotated, "rt") as f:
            out += [json.loads(line) for line in f.read().splitlines()]
    if os.path.exists(path):
        with open(path) as f:
            out += [json.loads(line) for line in f.read().splitlines()]
    return out


def run(path, frames, **options):
    """One 'service run': a writer that gives each frame a new track from its TrackIds."""
    writer = EventWriter(path, **options)
    for n in range(frames):
        writer.write(n, [face(writer.track_ids())])
    writer.close()
    return writer


def test_two_runs_append_with_their_run_ids_and_disjoint_track_ids(tmp_path):
    path = str(tmp_path / "events.jsonl")
    first, second = run(path, 5), run(path, 7)
    lines = lines_of(path)
    assert [l["run"] for l in lines] == [first.run_id] * 5 + [second.run_id] * 7
    assert first.run_id != second.run_id
    assert [l["frame"] for l in lines] == list(range(5)) + list(range(7))
    ids = [l["faces"][0]["track"] for l in lines]
    assert ids == list(range(1, 13))  # a clean stop records the exact next id: no gap
    with open(ev.state_path(path)) as f:
        assert json.load(f)["next_track"] == 13


def test_a_killed_run_skips_ids_but_never_reuses_one(tmp_path):
    path = str(tmp_path / "events.jsonl")
    writer = EventWriter(path)
    for n in range(3):
        writer.write(n, [face(writer.track_ids())])
    writer.flush()  # ... and the process is killed: no close, no exact next id recorded
    second = run(path, 2)
    ids = [l["faces"][0]["track"] for l in lines_of(path)]
    assert ids[:3] == [1, 2, 3] and min(ids[3:]) > 3
    assert ids[3] == 1 + ev.ID_BLOCK  # the reserved block is skipped
    assert second.track_ids.next == ids[-1] + 1


def test_blocks_are_reserved_as_ids_are_used(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "ID_BLOCK", 3)
    state = str(tmp_path / "s.json")
    ids = TrackIds(state)
    saved = []
    for _ in range(7):
        ids()
        with open(state) as f:
            saved.append(json.load(f)["next_track"])
    # Before handing out an id the state always lies beyond it: a crash anywhere is safe.
    assert saved == [4, 4, 4, 7, 7, 7, 10]
    assert TrackIds(state).next == 10


@pytest.mark.parametrize("state_text", [None, "{not json", '{"other": 1}'])
def test_lost_or_broken_state_is_recovered_from_the_events(tmp_path, state_text):
    path = str(tmp_path / "events.jsonl")
    run(path, 4)
    state = ev.state_path(path)
    if state_text is None:
        os.remove(state)
    else:
        with open(state, "w") as f:
            f.write(state_text)
    assert run(path, 1).track_ids.next == 6  # ids 1-4 in the file, then 5


def test_ids_start_at_least_where_asked(tmp_path):
    assert TrackIds(at_least=40)() == 40
    assert TrackIds(str(tmp_path / "s.json"), at_least=40)() == 40
    writer = EventWriter("-", at_least=9)
    assert writer.track_ids() == 9


@pytest.mark.parametrize("tail, removed", [
    (b'{"time":"2026-11-28T06:00:00.000Z","run":"x","frame":3,"fa', 58),  # a line cut short
    (b'{"frame":3,"faces":[]}\n' + b"\0" * 4096, 4096),                  # zeros after a line
    (b'{"frame":3,"fa' + b"\0" * 100, 114),                               # both
    (b"", 0),                                                             # nothing to repair
])
def test_a_partial_last_line_is_removed_at_start(tmp_path, tail, removed, caplog):
    path = str(tmp_path / "events.jsonl")
    run(path, 3)
    whole = open(path, "rb").read()
    with open(path, "ab") as f:
        f.write(tail)
    keep = whole + (tail[:tail.index(b"\n") + 1] if b"\n" in tail else b"")
    assert ev.repair_tail(path) == removed
    assert open(path, "rb").read() == keep
    run(path, 2)
    assert len(lines_of(path)) == 5 + keep.count(b"\n") - whole.count(b"\n")  # every line parses


def test_repair_of_a_file_that_is_one_partial_line(tmp_path):
    path = str(tmp_path / "events.jsonl")
    with open(path, "wb") as f:
        f.write(b"\0" * (ev.TAIL_BYTES + 10))  # longer than one read: the scan goes on back
    assert ev.repair_tail(path) == ev.TAIL_BYTES + 10 and os.path.getsize(path) == 0


def test_rotation_keeps_every_line_in_order_and_bounds_the_files(tmp_path):
    path = str(tmp_path / "events.jsonl")
    writer = EventWriter(path, max_bytes=2000, keep=100, compress=True)
    for n in range(200):
        writer.write(n, [face(writer.track_ids())])
    writer.close()
    rotated = ev.rotated_files(path)
    assert writer.rotations == len(rotated) > 5
    assert [seq for seq, _ in rotated] == list(range(1, len(rotated) + 1))
    assert all(p.endswith(".jsonl.gz") for _, p in rotated)  # compressed, no .tmp left
    assert sorted(os.listdir(str(tmp_path))) == sorted(
        [os.path.basename(p) for _, p in rotated] + ["events.jsonl", "events.state.json"])
    for _, p in rotated:
        with gzip.open(p, "rb") as f:
            assert len(f.read()) <= 2000
    assert [l["frame"] for l in lines_of(path)] == list(range(200))
    small = str(tmp_path / "small" / "events.jsonl")
    writer = EventWriter(small, max_bytes=2000, keep=3, compress=False)
    for n in range(200):
        writer.write(n, [])
    writer.close()
    assert [seq for seq, _ in ev.rotated_files(small)] == [writer.rotations - 2, writer.rotations - 1,
                                                          writer.rotations]
    frames = [l["frame"] for l in lines_of(small)]
    assert frames == list(range(200 - len(frames), 200))  # the newest lines, none missing among them


def test_compression_cut_short_is_done_again_at_start(tmp_path):
    path = str(tmp_path / "events.jsonl")
    writer = EventWriter(path, max_bytes=500, compress=False)
    for n in range(20):
        writer.write(n, [])
    writer.close()
    rotated = ev.rotated_files(path)
    with open(rotated[0][1] + ".gz.tmp", "wb") as f:
        f.write(b"\x1f\x8b half a gzip")  # the process died while compressing
    EventWriter(path, max_bytes=500, compress=True).close()
    names = os.listdir(str(tmp_path))
    assert not [n for n in names if n.endswith(".tmp")]
    assert all(p.endswith(".gz") for _, p in ev.rotated_files(path))
    assert [l["frame"] for l in lines_of(path)] == list(range(20))


def test_reopen_follows_an_outside_rename(tmp_path):
    """logrotate without copytruncate (rename, then `systemctl reload`) loses nothing."""
    path = str(tmp_path / "events.jsonl")
    writer = EventWriter(path)
    writer.write(0, [])
    os.rename(path, path + ".old")
    writer.write(1, [])  # still into the renamed file
    writer.reopen()
    writer.write(2, [])
    writer.close()
    assert [json.loads(l)["frame"] for l in open(path + ".old")] == [0, 1]
    assert [json.loads(l)["frame"] for l in open(path)] == [2]


def test_a_rotation_that_fails_keeps_every_line_and_stops_rotating(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / "events.jsonl")
    writer = EventWriter(path, max_bytes=500, compress=False)

    def refuse(src, dst):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(ev.os, "rename", refuse)
    for n in range(20):
        writer.write(n, [])
    writer.close()
    assert [l["frame"] for l in lines_of(path)] == list(range(20)) and writer.rotations == 0
    assert caplog.text.count("cannot rotate events file") == 1
