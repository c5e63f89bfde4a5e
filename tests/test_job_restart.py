"""The job run after a restart from a checkpoint: it shows what TensorBoard shows for the rank runs.

Four ranks log steps 0-149 (attempt 1), then each restarts as the README says, ``purge_step=100``
(tensorboardX writes a ``SessionLog.START`` at step 100 first in its new file), and logs steps 100-199
again with other values (attempt 2). TensorBoard's reader then shows attempt 1 for steps 0-99 and attempt 2
for 100-199 in every rank run; the job run must hold, at every step, the statistics of exactly that.
The rank files are tensorboardX's own (its ``purge_step`` path); the job view is the uploader's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import accumulator, plugin_accumulator
from tb_readers import default_reader_scalars, python_reader_scalars
from tensorboardX import SummaryWriter as TBXWriter
from test_job_view import _assert_equal, _Clock, _job_points, _recomputed

from hf_mpwriter.events.decoding import summaries
from hf_mpwriter.events.encoding import histogram_event, scalar_event, session_start_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.state.statedir import state_dir
from hf_mpwriter.timing import JOB_VIEW_WAIT_S
from hf_mpwriter.uploader.jobrun.bounds import ViewBounds
from hf_mpwriter.uploader.jobrun.points import histogram_key
from hf_mpwriter.uploader.jobrun.runfile import STATUS_FILE
from hf_mpwriter.uploader.jobrun.values import Held
from hf_mpwriter.uploader.jobrun.view import STATE_FILE, JobView

WORLD = 4


def _value(attempt: int, rank: int, step: int) -> float:
    return attempt * 1000.0 + rank * 10.0 + (step * 7 + rank * 3) % 11


def _attempt(logdir: Path, attempt: int, steps: range, purge_step: int | None = None, upto: int | None = None) -> None:
    """Every rank's writer of one attempt: ``steps`` logged (to ``upto``, where given, the rest never written)."""
    for rank in range(WORLD):
        writer = TBXWriter(str(logdir / f"rank-{rank:03d}"), purge_step=purge_step, filename_suffix=f".{attempt}")
        for step in steps:
            if upto is not None and step > upto:
                break
            writer.add_scalar("loss", _value(attempt, rank, step), step)
        writer.close()


def _view(logdir: Path, clock: _Clock, bounds: ViewBounds = ViewBounds()) -> JobView:
    return JobView(logdir, WORLD, wait=30.0, clock=clock, bounds=bounds)


def test_the_start_event_is_tensorboardxs_own(tmp_path):
    """What the job run writes to drop its own points is what ``purge_step`` writes, and reads back as a restart."""
    writer = TBXWriter(str(tmp_path), purge_step=100)
    writer.close()
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    (path,) = tmp_path.glob("*tfevents*")
    records = list(RawEventFileLoader(str(path)).Load())
    starts = [record for record in records if summaries(record)[2] is not None]
    assert [summaries(record)[2] for record in starts] == [100]
    from tensorboardX.proto.event_pb2 import Event

    wall = Event.FromString(starts[0]).wall_time
    assert session_start_event(100, wall) == starts[0]


@pytest.mark.parametrize("uploader", ["the same uploader", "a new uploader without its state", "long files read in parts"])
def test_a_resumed_job_s_run_equals_the_statistics_of_what_tensorboard_shows_for_its_ranks(tmp_path, uploader):
    """Attempt 1 logs 0-149 (the job run already holds them); the restart at 100 logs 100-199 again. The job
    run, read with TensorBoard's reader, equals at every step 0-199 the statistics of the rank runs as that
    reader shows them. With a new uploader that has no state: attempt 1's steps 140-149 were on disk, never
    read, and purged by the restart: no job point is made of them."""
    logdir, clock = tmp_path / "logs", _Clock()
    fresh = uploader != "the same uploader"
    # (a rank file past the 4 MiB an update reads, some 4,000 steps of 20 tags; and read again from a mark)
    bounds = ViewBounds(read_bytes=1500, mark_bytes=700) if uploader == "long files read in parts" else ViewBounds()
    _attempt(logdir, 1, range(150), upto=139 if fresh else None)
    view = _view(logdir, clock, bounds)
    view.update()
    clock.now += 60
    view.update()
    held = _job_points(logdir, "loss")
    assert max(held) == 139 if fresh else 149  # the scenario: the job run holds attempt 1 past the restart's step
    if fresh:  # 140-149 reach the disk after the view's last read; the uploader is killed; no state survives
        _attempt(logdir, 15, range(140, 150))  # (attempt 1's writer, its last records: in a file of its own)
        view.close()
        (state_dir(logdir) / STATE_FILE).unlink()
        view = _view(logdir, clock, bounds)
    _attempt(logdir, 2, range(100, 200), purge_step=100)
    view.update()
    clock.now += 60
    view.update(final=True)
    view.close()
    status = json.loads((state_dir(logdir) / STATUS_FILE).read_text())
    assert status["restarts"] >= 1  # the path: the view read the restart and made the steps from there anew
    for side in ("min", "max"):  # status's counts start again at the restart: the steps made anew, once
        assert sum(times for _, times in status["extremes"]["loss"][side]) == 100
    want = _recomputed(logdir, "loss")
    assert sorted(want) == list(range(200))  # what TensorBoard shows of the ranks: attempt 1 to 99, attempt 2 after
    assert {step: stats["mean"] // 1000 for step, stats in want.items()} == {s: 1 if s < 100 else 2 for s in range(200)}
    _assert_equal(_job_points(logdir, "loss"), want, WORLD)


def test_a_job_run_that_restarted_is_taken_up_without_writing_its_steps_twice(tmp_path):
    """A new uploader without its view's state reads the job run itself to know what it holds: points the
    job run dropped at its own restart are not held (they are made again), those before are."""
    logdir, clock = tmp_path / "logs", _Clock()
    _attempt(logdir, 1, range(150))
    view = _view(logdir, clock)
    view.update(final=True)
    _attempt(logdir, 2, range(100, 120), purge_step=100)
    view.update(final=True)
    view.close()
    (state_dir(logdir) / STATE_FILE).unlink()
    again = _view(logdir, clock)  # it finds 0-119 in the run (its points 120-149 were dropped at step 100)
    _attempt(logdir, 3, range(120, 130))
    again.update(final=True)
    again.close()
    points = _job_points(logdir, "loss")
    assert sorted(points) == list(range(130)) and accumulator(logdir / "job").Scalars("loss")


_KILLED_BEFORE_SAVE = """
import os, signal, sys
from pathlib import Path
from hf_mpwriter.events.encoding import scalar_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.uploader.jobrun.view import JobView

logdir, first = Path(sys.argv[1]), sys.argv[2]
saved = JobView.save
def save(view):  # the second save is never made: SIGKILLed once the run holds the points it would cover
    if view.points > (0 if first == "no point yet" else 10):
        os.kill(os.getpid(), signal.SIGKILL)
    saved(view)
JobView.save = save
writers = [EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1000, flush_secs=3600) for rank in range(2)]
def log(rank, steps, tags=("loss", "acc")):
    for step in steps:
        for tag in tags:
            writers[rank].add_serialized(scalar_event(tag, 1.0 + rank + step, step, 1000.0 + step))
    writers[rank].flush()
view = JobView(logdir, 2, wait=3600.0)
if first == "no point yet":  # (rank 1's file, empty so far: its steps are waited for, and the state saved)
    log(0, range(10))
    view.update()
    log(1, range(10), ("loss",))  # (its acc comes after the kill: those points still wait)
else:
    log(0, range(5)), log(1, range(5))
    view.update()
    log(0, range(5, 10)), log(1, range(5, 10), ("loss",))
view.update()
"""


@pytest.mark.parametrize("first", ["no point yet", "points 0-4"])
def test_an_uploader_killed_between_writing_points_and_saving_its_state_is_taken_up_without_writing_them_twice(
        tmp_path, first):
    """The view writes points into the job run, then saves the state that covers them; an uploader SIGKILLed
    between the two leaves the run holding points its state does not know of. The next one holds them (read
    from the run's files past the sizes the state saved): TensorBoard's Python reader, which shows a step
    written twice twice, and its default reader show every step once, and no value read again counts late."""
    logdir = tmp_path / "logs"
    for rank in range(2):
        (logdir / f"rank-{rank:03d}").mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_SAVE, str(logdir), first], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((state_dir(logdir) / STATE_FILE).read_text())  # the window: the run holds what the state does not
    assert state["held"] == ({} if first == "no point yet" else {"loss": 4, "acc": 4})
    assert sorted(_job_points(logdir, "loss")) == list(range(10))
    late_from = 0 if first == "no point yet" else 5
    for rank in range(2):  # (the relaunch's writers; rank 1 logs its acc of the steps before late)
        writer = EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1000, flush_secs=3600)
        for step in range(late_from if rank else 10, 20):
            for tag in ("loss", "acc") if step >= 10 else ("acc",):
                writer.add_serialized(scalar_event(tag, 1.0 + rank + step, step, 1000.0 + step))
        writer.close()
    view = JobView(logdir, 2, wait=3600.0)
    view.update(final=True)
    view.close()
    want = [(step, 1.5 + step) for step in range(20)]
    for reader in (python_reader_scalars, default_reader_scalars):
        runs = reader(logdir)["job"]
        assert runs["loss"] == want and runs["acc"] == want, reader.__name__
        assert [step for step, _ in runs["~job/lag_s"]] == list(range(20)), reader.__name__  # (it goes with each step)
    assert json.loads((state_dir(logdir) / STATUS_FILE).read_text())["late"] == 0


def test_a_job_run_that_cannot_be_read_past_its_state_does_not_keep_the_view_from_starting(tmp_path, monkeypatch):
    """The same kill, and the run's file cannot be opened when the next uploader takes up (another owner's, or
    gone): the view starts all the same and writes the points it could not find there again (TensorBoard's default
    reader shows each step once; its Python reader, the steps written after the state twice)."""
    import hf_mpwriter.uploader.jobrun.runfile as runfile_module

    logdir = tmp_path / "logs"
    for rank in range(2):
        (logdir / f"rank-{rank:03d}").mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_SAVE, str(logdir), "points 0-4"], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((state_dir(logdir) / STATE_FILE).read_text())  # the window: the run holds what the state does not
    assert state["held"] == {"loss": 4, "acc": 4} and sorted(_job_points(logdir, "loss")) == list(range(10))
    refused: list[str] = []

    def refuse(path):
        refused.append(os.fspath(path))
        raise PermissionError(13, "Permission denied", os.fspath(path))

    with monkeypatch.context() as patch:
        patch.setattr(runfile_module, "open_nofollow", refuse)
        view = JobView(logdir, 2, wait=3600.0)
    assert [Path(path).parent.name for path in refused] == ["job"]  # the path: the take-up's read was refused
    view.update(final=True)
    view.close()
    loss = [(step, 1.5 + step) for step in range(10)]
    assert default_reader_scalars(logdir)["job"]["loss"] == loss
    assert python_reader_scalars(logdir)["job"]["loss"] == loss + loss[5:]
    status = json.loads((state_dir(logdir) / STATUS_FILE).read_text())
    assert status["points"] == 20 and status["late"] == 0


_UNMERGEABLE_KILLED_BEFORE_SAVE = """
import os, signal, sys
from pathlib import Path
from hf_mpwriter.events.encoding import histogram_event, scalar_event
from hf_mpwriter.events.event_file import EventFileWriter
from hf_mpwriter.uploader.jobrun.view import JobView

logdir = Path(sys.argv[1])
saved = JobView.save
def save(view):  # the second save is never made: SIGKILLed once the run holds steps 5-9 (0-4: the first)
    if view.run.unmerged > 5:
        os.kill(os.getpid(), signal.SIGKILL)
    saved(view)
JobView.save = save
writers = [EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1000, flush_secs=3600) for rank in range(3)]
def log(ranks, steps):  # each rank's own bucket limits, overlapping another's buckets: the histograms do not merge
    for rank in ranks:
        for step in steps:
            value = 1.0 + rank
            stats = (value, value, 1.0, value, value * value)
            writers[rank].add_serialized(histogram_event("w", stats, [rank / 2 + 0.5, rank / 2 + 1.5], [0.0, 1.0], step,
                                                         1000.0 + step))
            writers[rank].add_serialized(scalar_event("loss", value + step, step, 1000.0 + step))
        writers[rank].flush()
view = JobView(logdir, 3, wait=3600.0)
log(range(3), range(5))
view.update()
log(range(2), range(5, 10))  # rank 2 logs no more: each step's missing-ranks text names it
view.update(final=True)
"""


def _missing_ranks_texts(logdir: Path, tag: str) -> list[tuple[int, str]]:
    """``(step, text)`` of each ``~job/<tag>/missing_ranks`` the job run holds, as TensorBoard's Python reader reads
    them (a step written twice: twice)."""
    events = plugin_accumulator(logdir / "job").Tensors(f"~job/{tag}/missing_ranks/text_summary")
    return [(event.step, event.tensor_proto.string_val[0].decode()) for event in events]


@pytest.mark.parametrize("restart", [False, True], ids=["", "ranks-restarted-at-8"])
def test_an_unmergeable_histogram_s_missing_ranks_written_before_an_uploader_was_killed_are_not_written_twice(
        tmp_path, restart):
    """A histogram whose ranks' bucket limits disagree is not merged; where ranks are missing, the job run holds
    only its ``~job/<tag>/missing_ranks`` text. An uploader SIGKILLed between writing those texts and saving its
    state: the next one makes those points again, and TensorBoard's Python reader showed each text twice.
    ``restart``: ranks 0 and 1 then restart at step 8 (a checkpoint's ``purge_step``) before the next uploader reads
    them: the texts it found below 8 are not written again, those from 8 on (its ``START`` drops them) are."""
    logdir = tmp_path / "logs"
    for rank in range(3):
        (logdir / f"rank-{rank:03d}").mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", _UNMERGEABLE_KILLED_BEFORE_SAVE, str(logdir)], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((state_dir(logdir) / STATE_FILE).read_text())  # the window: the run holds what the state does not
    assert state["held"] == {histogram_key("w"): 4, "loss": 4} and state["run"]["unmerged"] == 5
    want = [(step, "missing: rank 2") for step in range(5, 10)]
    assert _missing_ranks_texts(logdir, "w") == want
    for rank in range(2) if restart else ():
        writer = EventFileWriter(logdir / f"rank-{rank:03d}", max_queue=1000, flush_secs=3600, filename_suffix=".2")
        writer.add_serialized(session_start_event(8, 2000.0))
        value = 1.0 + rank
        for step in (8, 9):
            writer.add_serialized(histogram_event("w", (value, value, 1.0, value, value * value),
                                                  [rank / 2 + 0.5, rank / 2 + 1.5], [0.0, 1.0], step, 2000.0 + step))
            writer.add_serialized(scalar_event("loss", value + step, step, 2000.0 + step))
        writer.close()
    view = JobView(logdir, 3, wait=3600.0)
    view.update(final=True)
    view.close()
    assert _missing_ranks_texts(logdir, "w") == want  # (with the restart: 8 and 9 written again after its START)
    status = json.loads((state_dir(logdir) / STATUS_FILE).read_text())
    assert status["histograms_not_merged"] == 10 and status["late"] == 0


def _late_rank_job(tmp_path: Path, rank_2: str, bounds: ViewBounds = ViewBounds()) -> tuple[JobView, Path]:
    """Four ranks at 2 steps a second; rank 2 stalls 40 s at step 100 (a data loader, a checkpoint of its own)
    and then logs as fast as the others, 40 s behind; ``rank_2="dies"``: its writer is gone from step 100."""
    from test_job_view import _log, _rank_writer

    logdir, clock = tmp_path / "logs", _Clock()
    writers = [_rank_writer(logdir, rank) for rank in range(WORLD)]
    view = JobView(logdir, WORLD, wait=30.0, clock=clock, bounds=bounds)
    view.live = set(range(WORLD))
    backlog: list[tuple[float, int]] = []  # rank 2's steps, when they are logged
    for tick in range(0, 2 * 200 + 100):  # half-second ticks
        clock.now = tick / 2
        step = tick
        if step < 200:
            for rank in (0, 1, 3):
                _log(writers[rank], step, _value(1, rank, step))
            if step < 100:
                _log(writers[2], step, _value(1, 2, step))
            elif rank_2 == "late":
                backlog.append((clock.now + 40.0, step))
        while backlog and backlog[0][0] <= clock.now:
            late_step = backlog.pop(0)[1]
            _log(writers[2], late_step, _value(1, 2, late_step))
        if rank_2 == "dies" and step == 100:
            view.live = {0, 1, 3}
        view.update()
    assert view.points == 200, view.points  # every step written while the job ran (not at its end)
    view.update(final=True)
    view.close()
    return view, logdir


def test_a_rank_late_by_40_s_is_waited_for_and_the_job_run_is_exact(tmp_path):
    """Rank 2, alive, 40 s behind from step 100: every step waits for it (past the 30 s wait), so every point
    holds the 4 ranks, none is late; ``status`` says nobody is behind at the end."""
    view, logdir = _late_rank_job(tmp_path, "late")
    points = _job_points(logdir, "loss")
    assert sorted(points) == list(range(200))
    assert {step for step, stats in points.items() if stats["ranks"] != WORLD} == set()
    assert view.late == 0 and json.loads((state_dir(logdir) / STATUS_FILE).read_text())["behind"] == {}


def test_past_the_bound_on_points_waiting_the_oldest_are_written_without_the_late_rank_and_said(tmp_path):
    """The same rank 40 s behind, with room for 40 points waiting (80 wait for it at 2 steps a second): the
    oldest past their wait are written with the 3 others, rank 2 named missing; its values for them come late
    and are counted; ``status`` counts the points written without it. Memory stays bounded."""
    view, logdir = _late_rank_job(tmp_path, "late", ViewBounds(waiting_points=40))
    points = _job_points(logdir, "loss")
    short = {step for step, stats in points.items() if stats["ranks"] != WORLD}
    assert sorted(points) == list(range(200)) and short and short <= set(range(100, 200))
    assert {points[step]["missing"] for step in short} == {1.0}
    status = json.loads((state_dir(logdir) / STATUS_FILE).read_text())
    assert status["unwaited"] == len(short) and view.late == len(short)


def test_a_rank_whose_writer_is_gone_is_not_waited_for(tmp_path):
    """Rank 2's writer is gone at step 100: from there each step is written after its wait with the 3 others,
    rank 2 named missing, without waiting out the silent bound."""
    view, logdir = _late_rank_job(tmp_path, "dies")
    points = _job_points(logdir, "loss")
    assert sorted(points) == list(range(200))
    assert {step for step, stats in points.items() if stats["ranks"] == WORLD - 1} == set(range(100, 200))
    assert {step: stats["missing"] for step, stats in points.items() if step >= 100} == {s: 1.0 for s in range(100, 200)}


def test_a_restart_read_from_long_files_makes_no_point_of_the_older_attempts_tail(tmp_path):
    """Attempt 1 reached step 199; the restart at 100 has reached 120 so far. A new uploader (no state) reads
    the long old files a part at a time, their tail after the restart's START in the new files: nothing of
    attempt 1 from step 100 on is made into a point (TensorBoard shows none of it), so the job run ends at 120."""
    logdir, clock = tmp_path / "logs", _Clock()
    _attempt(logdir, 1, range(200))
    _attempt(logdir, 2, range(100, 121), purge_step=100)
    view = _view(logdir, clock, ViewBounds(read_bytes=1500))  # (as a rank file past 4 MiB: read in parts)
    view.update()
    clock.now += 60
    view.update()
    assert view.backlog is False and view.points > 0  # the scenario: everything read, in parts
    view.update(final=True)
    view.close()
    want = _recomputed(logdir, "loss")
    assert sorted(want) == list(range(121))
    _assert_equal(_job_points(logdir, "loss"), want, WORLD)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_job_preempted_after_step_150_and_resumed_at_100_has_the_job_run_tensorboard_shows(tmp_path, how):
    """Four real writer processes (``WORLD_SIZE=4``) log 150 steps and more, then the whole job goes: SIGKILL
    (ranks and uploader), or SIGTERM (each commits what it wrote). The job restarts from the step-100
    checkpoint as the README says (``purge_step=100``) and logs steps 100-199 with other values. At the
    target, read with TensorBoard's reader, the job run's statistics equal those of the rank runs (attempt 1
    to 99, attempt 2 after) at every step 0-199."""
    import signal

    from helpers import read_line
    from upload_helpers import finish, local_target_files, materialise, sigkill, start_writer, uploader_pid, wait_for

    logdir, target = tmp_path / "logs", tmp_path / "target"
    cfg = {"logdir": str(logdir), "target_dir": str(target), "commit_every_s": 1.0, "step_time": True,
           "sleep": 0.01, "close_timeout": 90}
    env = [{"RANK": str(r), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(r)} for r in range(WORLD)]
    first = [start_writer({**cfg, "steps": 10**6}, env[r]) for r in range(WORLD)]
    for proc in first:
        read_line(proc, "flushed 159", 60)  # past step 150 on every rank
    uploader = wait_for(lambda: uploader_pid(logdir), 30, "the uploader")
    if how == "SIGKILL":
        for pid in [uploader, *(proc.pid for proc in first)]:
            sigkill(pid)
    else:
        for proc in first:
            proc.send_signal(signal.SIGTERM)
    for proc in first:
        proc.wait(60)
        proc.stdout.close()
        proc.stderr.close()
    wait_for(lambda: uploader_pid(logdir) is None, 60, "the first attempt's uploader to be gone")
    second = [start_writer({**cfg, "start": 100, "steps": 200, "purge_step": 100, "attempt": 1}, env[r])
              for r in range(WORLD)]
    for proc in second:
        finish(proc)
    wait_for(lambda: uploader_pid(logdir) is None, 90, "the uploader to write the job run's last points and exit")
    copy = materialise(local_target_files(target, "tensorboard/logs"), tmp_path / "remote")
    want = _recomputed(copy, "step_time")
    assert sorted(want) == list(range(200))  # the scenario: TensorBoard shows attempt 1 to 99, attempt 2 after
    assert all((stats["mean"] >= 100) == (step >= 100) for step, stats in want.items())
    _assert_equal(_job_points(copy, "step_time"), want, WORLD)


def test_a_rank_late_past_the_wait_in_real_processes_is_waited_for_at_the_target(tmp_path):
    """Four real writer processes (``WORLD_SIZE=4``) and their node's uploader, to a local target: rank 2
    stalls 40 s before step 20 (past the job run's 30 s wait: a data loader, a checkpoint of its own) and
    logs every later step that much behind the others. The job run at the target, read with TensorBoard's
    reader, holds every step with the four ranks, and equals their statistics. (Longer runs:
    ``scripts/soak_late_rank.py``.)"""
    from upload_helpers import finish, local_target_files, materialise, start_writer, uploader_pid, wait_for

    logdir, target = tmp_path / "logs", tmp_path / "target"
    cfg = {"logdir": str(logdir), "target_dir": str(target), "commit_every_s": 1.0, "step_time": True,
           "sleep": 0.1, "steps": 40, "close_timeout": 90}
    procs = [start_writer({**cfg, **({"stall_at": 20, "stall_s": 40.0} if rank == 2 else {})},
                          {"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank)}) for rank in range(WORLD)]
    for proc in procs:
        finish(proc, 120)
    wait_for(lambda: uploader_pid(logdir) is None, 90, "the uploader to write the job run's last points and exit")
    copy = materialise(local_target_files(target, "tensorboard/logs"), tmp_path / "remote")
    want = _recomputed(copy, "step_time")
    assert sorted(want) == list(range(40))
    walls = {rank: {e.step: e.wall_time for e in accumulator(copy / f"rank-{rank:03d}").Scalars("step_time")}
             for rank in range(WORLD)}
    first = min(walls[rank][20] for rank in range(WORLD) if rank != 2)
    assert walls[2][20] - first > JOB_VIEW_WAIT_S + 2  # the scenario: rank 2 logged step 20 past the wait (and a read)
    _assert_equal(_job_points(copy, "step_time"), want, WORLD)
    assert {stats["ranks"] for stats in want.values()} == {WORLD}


def test_a_node_whose_uploader_restarts_while_it_reads_again_passes_on_no_point_of_the_purged_attempt(tmp_path):
    """A node of a job with a store passed on steps 0-120 (attempt 2 from 100); the leader's word restarts the
    job run at 100 (another node's rank), so the node reads its ranks again from there, in parts (long
    files), and its uploader restarts halfway. The new one goes on reading again: no point it passes on
    from step 100 is made of attempt 1's values (purged in the rank runs), and steps 100-120 are attempt 2's."""
    logdir, clock = tmp_path / "logs", _Clock()
    _attempt(logdir, 1, range(200))
    _attempt(logdir, 2, range(100, 121), purge_step=100)
    view = JobView(logdir, WORLD, wait=30.0, clock=clock, node_ranks=WORLD)
    view.update()
    clock.now += 60
    view.update()
    assert sorted(step for _, step in view.outbox.points) == list(range(121))
    view.acknowledged(Held(steps={"loss": 99}, restarts=[(7, 100)]))
    view.save()
    view.close()
    again = JobView(logdir, WORLD, wait=30.0, clock=clock, node_ranks=WORLD,
                    bounds=ViewBounds(read_bytes=1500))  # (the uploader restarted; long files: read in parts)
    parts = 0
    while True:
        again.update(budget=0)
        parts += 1
        assert {step for (_, step), point in again.outbox.points.items() if step >= 100 and point.mean < 2000} == set()
        if not again.backlog:
            break
    assert parts > 2  # the scenario: read again in parts, by the new uploader
    assert sorted(step for _, step in again.outbox.points) == list(range(100, 121))
    assert again.outbox.epoch == 7


def test_a_restart_reads_the_other_ranks_files_again_from_near_its_step_not_from_their_start(tmp_path, monkeypatch):
    """A long run's files (marks every 1,500 bytes, where a run's are every 4 MiB), read as they grow: after
    steps 0-1999, a restart at 1990 reads each other rank's file again from the last mark below step 1990, not
    from its start, and the job run is still what TensorBoard shows for the ranks at every step."""
    import hf_mpwriter.uploader.jobrun.reading as reading_module

    logdir, clock = tmp_path / "logs", _Clock()
    view = _view(logdir, clock, ViewBounds(mark_bytes=1500))
    writers = [TBXWriter(str(logdir / f"rank-{rank:03d}"), filename_suffix=".1") for rank in range(WORLD)]
    for step in range(2000):
        for rank, writer in enumerate(writers):
            writer.add_scalar("loss", _value(1, rank, step), step)
        if step % 100 == 99:  # (an update a commit interval)
            for writer in writers:
                writer.flush()
            view.update()
    for writer in writers:
        writer.close()
    clock.now += 60
    view.update()
    starts: list[tuple[str, int]] = []
    reading = reading_module.iter_records

    def spied(handle, start=0):
        starts.append((os.readlink(f"/proc/self/fd/{handle.fileno()}"), start))
        return reading(handle, start)

    monkeypatch.setattr(reading_module, "iter_records", spied)
    _attempt(logdir, 2, range(1990, 2010), purge_step=1990)
    view.update()
    clock.now += 60
    view.update(final=True)
    view.close()
    again = [(name, start) for name, start in starts if name.endswith(".1")]  # attempt 1's files, read again
    sizes = {str(path.resolve()): path.stat().st_size for path in logdir.glob("rank-*/*tfevents*.1")}
    assert len(again) == WORLD - 1 and all(0.9 * sizes[name] < start < sizes[name] for name, start in again), (again, sizes)
    want = _recomputed(logdir, "loss")
    assert sorted(want) == list(range(2010))
    _assert_equal(_job_points(logdir, "loss"), want, WORLD)


def test_a_job_resumed_without_purge_step_has_the_job_run_tensorboards_default_reader_shows(tmp_path):
    """A plain script resumed at 100 without ``purge_step`` logs steps 100-199 again: TensorBoard's default reader
    (the Rust data server) shows attempt 2 from 100 in each rank run, and so does the job run (read with it
    too); its Python reader shows both attempts (``status`` says the readers differ, and what to pass)."""
    logdir, clock = tmp_path / "logs", _Clock()
    _attempt(logdir, 1, range(150))
    view = _view(logdir, clock)
    view.update()
    clock.now += 60
    view.update()
    assert max(_job_points(logdir, "loss")) == 149  # the scenario: the job run holds attempt 1 past the step gone back to
    _attempt(logdir, 2, range(100, 200))
    view.update()
    clock.now += 60
    view.update(final=True)
    view.close()
    shown = default_reader_scalars(logdir)
    ranks = {int(run.split("-")[1]): dict(tags["loss"]) for run, tags in shown.items() if run.startswith("rank-")}
    assert all(len(points) == 200 for points in ranks.values())  # once a step; attempt 2's from 100:
    assert {ranks[0][step] // 1000 for step in range(100)} == {1} and {ranks[0][s] // 1000 for s in range(100, 200)} == {2}
    job = dict(shown["job"]["loss"])  # the job run as the same reader shows it: the mean of the ranks at every step
    assert sorted(job) == list(range(200))
    for step in range(200):
        assert job[step] == pytest.approx(sum(points[step] for points in ranks.values()) / WORLD, rel=1e-6), step
    assert [step for step, _ in python_reader_scalars(logdir)["rank-000"]["loss"]].count(120) == 2  # readers differ
    status = json.loads((state_dir(logdir) / STATUS_FILE).read_text())
    assert status["without_restart_point"] == {str(rank): 100 for rank in range(WORLD)}
    assert status["late"] == 0


def test_a_tag_whose_steps_start_again_each_epoch_is_no_restart(tmp_path):
    """A batch index as the step (it starts again each epoch) beside an epoch metric at the epoch number, in one
    file a rank: TensorBoard's default reader drops the batch tag's earlier epochs and keeps every epoch's
    metric; the job run did the same for the batch tag but, taking each epoch for a restart of the whole rank,
    kept 1 of 20 epoch points (found by review)."""
    logdir, clock = tmp_path / "logs", _Clock()
    writers = [TBXWriter(str(logdir / f"rank-{rank:03d}")) for rank in range(2)]
    view = JobView(logdir, 2, wait=30.0, clock=clock)
    for epoch in range(20):
        for rank, writer in enumerate(writers):
            for batch in range(50):
                writer.add_scalar("batch_loss", float(rank + batch), batch)
            writer.add_scalar("epoch_loss", float(rank + epoch), epoch)
            writer.flush()
        view.update()
        clock.now += 60
        view.update()
    for writer in writers:
        writer.close()
    view.update(final=True)
    view.close()
    shown = default_reader_scalars(logdir)
    assert [step for step, _ in shown["rank-000"]["epoch_loss"]] == list(range(20))  # the scenario, as the reader shows it
    assert shown["job"]["epoch_loss"] == [(epoch, epoch + 0.5) for epoch in range(20)]
    assert json.loads((state_dir(logdir) / STATUS_FILE).read_text())["restarts"] == 0
