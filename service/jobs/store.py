"""Analysis jobs on disk: everything a job is and has done lives in its folder, so a restarted
server knows every job's state and resumes the ones it was running.

    <jobs home>/uploads/<upload id>        a recording streamed in for a job (then moved into a job)
    <jobs home>/.uploads.lock              held (flock) while an upload is counted and made
    <jobs home>/.places/<token>            a submission accepted whose job is not made yet (any worker's),
                                           renamed after its job while the job is being made
    <jobs home>/.jobs.lock                 held (flock) while the unfinished jobs are counted and a place made
    <jobs home>/.unfinished/<job id>       an index of the jobs not finished (made before such a state is
                                           written, removed after a finished one is), so the count a
                                           submission makes reads these jobs, not every job kept
    <jobs home>/<job id>/job.json          what was asked (sources, detection options, formats)
    <jobs home>/<job id>/state.json        status, progress, summary, error (rewritten atomically)
    <jobs home>/<job id>/input/            the uploaded recording, when there is one
    <jobs home>/<job id>/upload            that upload's id (written before it moves in: see sweep_half_made)
    <jobs home>/<job id>/out/              the tables of `chorus analyze`, its journal and errors.csv
    <jobs home>/<job id>/cancel            present once a cancel was asked
    <jobs home>/<job id>/lock              held (flock) by the process that runs the job
    <jobs home>/<job id>/followers         held shared (flock) by every process that means to run the job
    <jobs home>/.deleted-<job id>-<n>/     a deleted job's folder, renamed first so it stops being a
                                           job at once, removed next (or at the next start)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from analyze.atomic import write_text
from features import Channels
from layout.workspace import Workspace

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class JobRequest:
    """What a job analyzes and how: the options of `chorus analyze`."""

    sources: list[str]
    """Paths of the recordings (an uploaded file's, or files and folders under CHORUS_ANALYZE_ROOT)."""
    formats: list[str]
    min_confidence: float | None = None
    top_k: int | None = 3
    merge: bool = False
    species: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    channels: Channels = "mix"


@dataclass
class JobState:
    status: str = "queued"
    audio_seconds_done: float = 0.0
    audio_seconds_total: float = 0.0
    files_done: int = 0
    files_total: int = 0
    summary: dict[str, Any] | None = None
    error: str | None = None
    updated: float = field(default_factory=time.time)


def _last_written(folder: Path) -> float:
    """The newest modification time of folder and everything under it."""
    return max(path.stat().st_mtime for path in (folder, *folder.rglob("*")))


def _is_job(folder: Path) -> bool:
    """A folder with its request and its state on disk (one a crash left half made is not a job)."""
    return (folder / "job.json").is_file() and (folder / "state.json").is_file()


@contextmanager
def _held(lock_file: Path) -> Iterator[None]:
    """An exclusive lock (flock) on lock_file for the block, shared by every process using the folder.
    Blocking: run it off the event loop."""
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def _tried(lock_file: Path) -> Iterator[bool]:
    """Whether an exclusive lock (flock) on lock_file was free, taken for the block when it was.
    Never waits: for the event loop too."""
    with lock_file.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class TooManyUploads(Exception):
    """The uploads no job has taken are at their limit; the argument: how many wait."""


class TooManyJobs(Exception):
    """The jobs queued or running, with the places taken for jobs not made yet, are at their limit;
    the argument: how many."""


PLACE_SECONDS = 300.0
"""A place older than this was left by a worker that died before making its job (a job is made
within a second of its submission's answer): it no longer counts, and is removed."""


class JobBusyError(Exception):
    """The job is queued or running: it must be cancelled (and have stopped) before it is deleted."""


class JobStore:
    def __init__(self, home: Path):
        self.home = home
        (home / "uploads").mkdir(parents=True, exist_ok=True)
        self._unfinished = home / ".unfinished"
        self._unfinished.mkdir(exist_ok=True)
        # What never changes once a job has it, looked up once by this store: a finished job's status
        # (it can only be deleted) and its listing key (job.json is written once). By id: ids are
        # never used twice (BentoML's task ids are random UUIDs), and a delete here forgets its own.
        self._finished: dict[str, str] = {}
        self._keys: dict[str, tuple[int, str]] = {}
        for left in home.glob(".deleted-*"):  # a server stopped half way through a delete
            shutil.rmtree(left, ignore_errors=True)
        self.sweep_half_made()

    @staticmethod
    def valid_id(job_id: str) -> bool:
        return bool(_ID.match(job_id))

    def folder(self, job_id: str) -> Path:
        if not self.valid_id(job_id):
            raise KeyError(job_id)
        return self.home / job_id

    def exists(self, job_id: str) -> bool:
        return self.valid_id(job_id) and _is_job(self.home / job_id)

    # Uploads

    def new_upload(self, max_pending: int | None = None) -> tuple[str, Path]:
        """An id and a fresh folder for one uploaded recording (kept under its own file name there).
        TooManyUploads when max_pending uploads wait already: counted and made under one lock, so
        uploads arriving together (from any worker) cannot all pass one count."""
        with _held(self.home / ".uploads.lock"):
            if max_pending is not None and (waiting := self.pending_uploads()) >= max_pending:
                raise TooManyUploads(waiting)
            upload_id = uuid.uuid4().hex
            folder = self.home / "uploads" / upload_id
            folder.mkdir()
        return upload_id, folder

    def pending_uploads(self) -> int:
        """Uploads no job has taken yet (still streaming in included)."""
        return sum(1 for folder in (self.home / "uploads").iterdir() if folder.is_dir())

    # Places for jobs about to be made

    def take_place(self, max_unfinished: int) -> Path:
        """A place for one job, to be made next: TooManyJobs when the jobs queued or running and the
        places others hold reach max_unfinished. Counted and made under one lock, so submissions
        arriving together at any of the workers sharing this folder cannot all pass one count. The
        caller gives it back (give_back_place) once its job is on disk, or will never be."""
        places = self.home / ".places"
        places.mkdir(exist_ok=True)
        with _held(self.home / ".jobs.lock"):
            held = set()
            for place in places.iterdir():
                with contextlib.suppress(FileNotFoundError):  # given back since it was listed
                    # Expired, or named after a job already made (its process died before giving it
                    # back): it counts for nothing more.
                    if time.time() - place.stat().st_mtime > PLACE_SECONDS or _is_job(self.home / place.name):
                        place.unlink()
                    else:
                        held.add(place.name)
            # The places before the jobs: a job made meanwhile is seen as one or the other, never
            # as neither. A job takes its place over (create: renamed after it, under this lock, so
            # not during a count) before it can be counted: a place named after a job counted is
            # that job's, not one more.
            unfinished = len(held | self._unfinished_ids())
            if unfinished >= max_unfinished:
                raise TooManyJobs(unfinished)
            place = places / uuid.uuid4().hex
            place.touch()
        return place

    @staticmethod
    def give_back_place(place: Path) -> None:
        place.unlink(missing_ok=True)

    def places_held(self) -> int:
        places = self.home / ".places"
        return sum(1 for _ in places.iterdir()) if places.is_dir() else 0

    def upload_path(self, upload_id: str) -> Path:
        if not self.valid_id(upload_id) or not (self.home / "uploads" / upload_id).is_dir():
            raise KeyError(upload_id)
        return self.home / "uploads" / upload_id

    # Jobs

    def create(self, job_id: str, request: JobRequest, upload: Path | None = None, place: Path | None = None) -> None:
        """A new job's folder; an upload's folder moves into it (so the job owns its input). The
        submission's place (take_place), when given, is renamed after the job before the job can be
        counted and given back once it is on disk: at no moment does a count see both."""
        folder = self.folder(job_id)
        if place is not None:
            # Under the lock a count holds, so the place is not renamed during one. FileNotFoundError:
            # expired (PLACE_SECONDS) and removed by a count.
            with _held(self.home / ".jobs.lock"), contextlib.suppress(FileNotFoundError):
                place = place.rename(place.with_name(job_id))
                place.touch()  # its PLACE_SECONDS run from here: a slow answer before it cannot expire it
        try:
            self._make(folder, job_id, request, upload)
        finally:
            if place is not None:
                self.give_back_place(place)

    def _make(self, folder: Path, job_id: str, request: JobRequest, upload: Path | None) -> None:
        (folder / "out").mkdir(parents=True, exist_ok=True)
        # Held while the job is made: a sweep (sweep_half_made) skips a folder whose lock is held,
        # however long a slow disk makes this take.
        with _held(folder / "lock"):
            try:
                state = JobState()
                if upload is not None:
                    # Its id first: a process killed from here until job.json is written leaves the
                    # upload where sweep_half_made gives it back.
                    write_text(folder / "upload", upload.name)
                    try:
                        upload.rename(folder / "input")
                        request = JobRequest(**{**asdict(request), "sources": sorted(str(p) for p in (folder / "input").iterdir())})
                    except FileNotFoundError:  # deleted or expired since the submission was checked
                        request = JobRequest(**{**asdict(request), "sources": []})
                        state = JobState(status="failed", error="its upload was deleted before the job started; upload the recording again")
                # The state first: job.json is what makes the folder a job, so a crash between the two
                # writes leaves a folder that is ignored (then swept) rather than a job without a state.
                self.save_state(job_id, state)
                write_text(folder / "job.json", json.dumps(asdict(request), indent=2) + "\n")
            except BaseException:  # (a full disk): the upload goes back, no folder is left that nothing lists or expires
                if upload is not None and (folder / "input").is_dir():
                    (folder / "input").rename(upload)
                shutil.rmtree(folder, ignore_errors=True)
                raise

    def sweep_half_made(self, older_than: float = PLACE_SECONDS) -> list[str]:
        """Remove the folders a process killed inside create left half made (no job.json: never a
        job, so nothing lists, runs or expires them), giving their upload back under its own id, so
        the client that got no answer finds it when it submits again; the folders' names. Only those
        nothing was written to for older_than seconds and whose lock no process holds: another
        worker may be making one now. Run at every start and with every expiry pass."""
        swept = []
        with os.scandir(self.home) as entries:  # one stat a job folder: a start with 10,000 jobs kept lists them all
            maybe = [
                Path(entry.path)
                for entry in entries
                if entry.name != "uploads"
                and self.valid_id(entry.name)
                and entry.is_dir(follow_symlinks=False)
                and not os.path.exists(os.path.join(entry.path, "job.json"))
            ]
        for folder in maybe:
            # FileNotFoundError: made into a job and deleted, or swept by another process, meanwhile.
            with contextlib.suppress(FileNotFoundError):
                if time.time() - _last_written(folder) < older_than:  # before the lock file is opened (made)
                    continue
                with self.running(folder.name) as free:
                    if not free or _is_job(folder):  # being made now, or made meanwhile
                        continue
                    upload_id = (folder / "upload").read_text().strip() if (folder / "upload").is_file() else ""
                    back = self.home / "uploads" / upload_id
                    if (folder / "input").is_dir() and self.valid_id(upload_id) and not back.exists():
                        (folder / "input").rename(back)
                        os.utime(back)  # its keep time (expire) runs from its return, not from its upload
                    trash = self.home / f".deleted-{folder.name}-{uuid.uuid4().hex[:8]}"
                    folder.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
                (self._unfinished / folder.name).unlink(missing_ok=True)
                swept.append(folder.name)
        return swept

    def request(self, job_id: str) -> JobRequest:
        return JobRequest(**json.loads((self.folder(job_id) / "job.json").read_text()))

    def state(self, job_id: str) -> JobState:
        return JobState(**json.loads((self.folder(job_id) / "state.json").read_text()))

    def save_state(self, job_id: str, state: JobState) -> None:
        # The index entry is made before an unfinished state is written and removed after a finished
        # one is, so a process that dies between the two leaves an entry too many (count_unfinished
        # drops it), never one too few. What the disk loses in a power cut, counts() enters again.
        target = self.folder(job_id) / "state.json"  # KeyError for a name that is no job's, before anything is written
        entry = self._unfinished / job_id
        finished = state.status in FINISHED
        if not finished:
            entry.touch()
        state.updated = time.time()
        write_text(target, json.dumps(asdict(state), indent=2) + "\n")
        if finished:
            entry.unlink(missing_ok=True)

    def jobs(self) -> list[str]:
        """Every job's id, oldest first: the order they are listed in and resumed in after a restart."""
        return [job_id for _, job_id in self.listing_keys()]

    def listing_keys(self, unfinished_only: bool = False) -> list[tuple[int, str]]:
        """(when its job.json was written in ns, id) of every job, oldest first: job.json is written
        once, when the job is made, so a key keeps its place however the listing changes around it.
        unfinished_only: the jobs in the index of unfinished ones (and a few that just finished),
        without looking at the others. A job deleted while the folder is read may be listed: its
        readers find it gone."""
        names = [entry.name for entry in self._unfinished.iterdir()] if unfinished_only else [f.name for f in self.home.iterdir()]
        keys = {}
        for name in names:
            key = self._keys.get(name)
            if key is None:
                with contextlib.suppress(FileNotFoundError):  # deleted while listed
                    if self.valid_id(name) and _is_job(self.home / name):
                        key = ((self.home / name / "job.json").stat().st_mtime_ns, name)
            if key is not None:
                keys[name] = key
        if not unfinished_only:  # kept from full listings only, which forget the deleted ones
            self._keys = keys
        return sorted(keys.values())

    def status(self, job_id: str) -> str:
        """The job's status (FileNotFoundError once it is gone); a finished one is read once."""
        status = self._finished.get(job_id)
        if status is None:
            status = self.state(job_id).status
            if status in FINISHED:
                self._finished[job_id] = status
        return status

    def count_unfinished(self) -> int:
        """How many jobs are queued or running (_unfinished_ids)."""
        return len(self._unfinished_ids())

    def _unfinished_ids(self) -> set[str]:
        """The jobs queued or running, read from the index: the states of those jobs alone, however many
        finished jobs are kept. An entry whose job finished (its process died before removing it) or
        is gone is removed; one whose job is not made yet counts through its place, and one a process
        left half made (never a job) does not count."""
        ids = set()
        for entry in self._unfinished.iterdir():
            if not self.valid_id(entry.name):  # not an entry this store made
                entry.unlink(missing_ok=True)
                continue
            folder = self.home / entry.name
            try:
                status: str | None = self.state(entry.name).status
            except FileNotFoundError:  # no state yet (being made), or no folder (deleted)
                status = None
            if status in FINISHED or not folder.is_dir():
                entry.unlink(missing_ok=True)
            elif status is not None and _is_job(folder):
                ids.add(entry.name)
        return ids

    def reindex(self) -> list[str]:
        """Every unfinished job's id, oldest first, each entered in the index: what a start reads, so
        one made by a version without the index, or whose entry a power cut lost, counts from then on.
        The finished ones' states it reads are kept (status()): the start's gauge count reads none again."""
        unfinished = []
        for job_id in self.jobs():
            with contextlib.suppress(FileNotFoundError):  # deleted since it was listed
                if self.status(job_id) not in FINISHED:
                    (self._unfinished / job_id).touch()
                    unfinished.append(job_id)
        return unfinished

    def counts(self) -> dict[str, int]:
        """The jobs by state, as on disk (the jobs gauge, when a job starts or ends), entering in the
        index each unfinished one it lacks. The states of the finished jobs this store has seen
        before are not read again: a recount lists the folder and reads the others."""
        counts = dict.fromkeys(STATES, 0)
        listed = set()
        for folder in self.home.iterdir():
            if folder.name not in self._finished and not (self.valid_id(folder.name) and _is_job(folder)):
                continue
            try:
                status = self.status(folder.name)
            except FileNotFoundError:  # deleted since it was listed
                continue
            if status not in FINISHED:
                (self._unfinished / folder.name).touch()
            listed.add(folder.name)
            counts[status] += 1
        # The deleted forgotten. A copy of the items: status() in another thread (a listing, the orphans' look) may add one meanwhile.
        self._finished = {job_id: status for job_id, status in list(self._finished.items()) if job_id in listed}
        return counts

    def ask_cancel(self, job_id: str) -> None:
        (self.folder(job_id) / "cancel").touch()

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop. One that no process runs (queued) is cancelled here and now, rather
        than shown as queued until its turn comes; a running one stops at its next batch of windows.
        False when it had finished already: nothing to cancel."""
        if self.state(job_id).status in FINISHED:
            return False
        self.ask_cancel(job_id)
        self._move_if_idle(job_id, ("queued", "running"), "cancelled")
        return True

    def requeue_if_abandoned(self, job_id: str) -> None:
        """A job shown as running that no process runs (its server stopped) is queued again: until a
        worker takes it up it is waiting, not running."""
        self._move_if_idle(job_id, ("running",), "queued")

    def _move_if_idle(self, job_id: str, from_states: tuple[str, ...], to_state: str) -> None:
        # Under the job's lock, so no process starts or finishes the job in between; a worker whose
        # run tries the lock meanwhile tries again a second later (JobRunner.run).
        if self.state(job_id).status not in from_states:
            return
        with self.running(job_id) as idle:
            state = self.state(job_id)
            if idle and state.status in from_states:
                state.status = to_state
                self.save_state(job_id, state)

    def delete(self, job_id: str) -> None:
        """Remove a finished job with its input and tables (JobBusyError while it is queued or running;
        FileNotFoundError when it is gone already)."""
        trash = self.home / f".deleted-{job_id}-{uuid.uuid4().hex[:8]}"
        status = self.state(job_id).status
        if status not in FINISHED:  # refused without taking the lock, which a worker may be about to take
            raise JobBusyError(f"job {job_id} is {status}")
        with self.running(job_id) as idle:
            if not _is_job(self.folder(job_id)):  # another delete got there first (this lock may be its trash's)
                raise FileNotFoundError(self.folder(job_id))
            status = self.state(job_id).status
            if not idle or status not in FINISHED:
                raise JobBusyError(f"job {job_id} is {'running' if not idle else status}")
            self.folder(job_id).rename(trash)  # no longer a job from here on, whatever happens next
        self._finished.pop(job_id, None)
        self._keys.pop(job_id, None)
        shutil.rmtree(trash, ignore_errors=True)

    def expire(self, before: float | None, uploads_before: float | None = None) -> list[str]:
        """Delete the finished jobs whose state last changed before `before` (a time.time(); None: no
        job) and the uploads no job took that were last written before `uploads_before` (None: the
        same time as jobs); the ids deleted. Another process may be deleting the same ones: what it
        got to first is skipped. Folders left half made (sweep_half_made) go too, and count among the ids."""
        deleted = self.sweep_half_made()
        if before is not None:
            for job_id in self.jobs():
                with contextlib.suppress(FileNotFoundError, JobBusyError):
                    state = self.state(job_id)
                    if state.status in FINISHED and state.updated < before:
                        self.delete(job_id)
                        deleted.append(job_id)
        uploads_before = before if uploads_before is None else uploads_before
        if uploads_before is not None:
            for folder in (self.home / "uploads").iterdir():
                if not folder.is_dir():  # not an upload (uploads are folders): not ours to delete
                    continue
                with contextlib.suppress(FileNotFoundError, KeyError):
                    # The newest of the folder and its file: an upload still streaming in is written now.
                    written = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
                    if written < uploads_before:
                        self.delete_upload(folder.name)
                        deleted.append(folder.name)
        return deleted

    def delete_upload(self, upload_id: str) -> None:
        """Remove an upload no job has taken (KeyError once a job has: it moved into the job's folder)."""
        trash = self.home / f".deleted-upload-{upload_id}"
        try:
            self.upload_path(upload_id).rename(trash)
        except FileNotFoundError:  # a submission took it in between
            raise KeyError(upload_id) from None
        shutil.rmtree(trash, ignore_errors=True)

    def cancel_asked(self, job_id: str) -> bool:
        return (self.folder(job_id) / "cancel").exists()

    def outputs(self, job_id: str) -> list[str]:
        """Names of the job's tables so far (relative to its out/ folder), the journal's own files left out."""
        out = self.folder(job_id) / "out"
        names: list[str] = []
        for folder, subfolders, files in os.walk(out):
            if folder == str(out):  # the journal's own (.chorus-analyze/: a part per recording) is not walked
                subfolders[:] = [name for name in subfolders if not name.startswith(".")]
                files = [name for name in files if not name.startswith(".")]
            names.extend(os.path.relpath(os.path.join(folder, name), out) for name in files)
        return sorted(names)

    def output(self, job_id: str, name: str) -> Path:
        """One of the job's tables by its name in outputs(): nothing else is ever served."""
        if name not in self.outputs(job_id):
            raise KeyError(name)
        return self.folder(job_id) / "out" / name

    def follow(self, job_id: str) -> IO[str]:
        """Say that this process means to run the job, until the file returned is closed (or the
        process ends): a shared lock on the job's followers file (followed). Blocks for a moment at
        most, while a `followed` looks."""
        followers = (self.folder(job_id) / "followers").open("a")
        try:
            fcntl.flock(followers, fcntl.LOCK_SH)
        except BaseException:
            followers.close()
            raise
        return followers

    def followed(self, job_id: str) -> bool:
        """Whether any process (this one included) means to run the job (follow)."""
        with _tried(self.folder(job_id) / "followers") as nobody:
            return not nobody

    def orphans(self) -> list[str]:
        """The unfinished jobs no process means to run (followed), oldest first, each left running
        queued again: their worker stopped for good (a pod scaled down or lost: its jobs wait for no
        restart) or its run failed to write its final state."""
        found = []
        for _, job_id in self.listing_keys(unfinished_only=True):
            with contextlib.suppress(FileNotFoundError):  # deleted, or finished and deleted, meanwhile
                if self.status(job_id) not in FINISHED and not self.followed(job_id):
                    self.requeue_if_abandoned(job_id)
                    found.append(job_id)
        return found

    @contextmanager
    def running(self, job_id: str) -> Iterator[bool]:
        """Whether this process may run the job: a lock on the job folder, held while it runs."""
        with _tried(self.folder(job_id) / "lock") as mine:
            yield mine


class JobsFolderError(Exception):
    """The jobs folder cannot be made or written."""


def open_job_store(home: Path) -> JobStore:
    """The store in `home`, made if needed; JobsFolderError when it cannot be (a read-only file
    system, as a container's usually is, or a path through a file)."""
    try:
        store = JobStore(home)
        with tempfile.TemporaryFile(dir=home / "uploads"):  # an existing folder may still be read-only
            pass
        return store
    except OSError as exc:
        raise JobsFolderError(
            f"its jobs folder {home} cannot be used ({exc.strerror or exc}); set CHORUS_JOBS_HOME to a writable folder "
            "(on Kubernetes, a volume every pod mounts)"
        ) from exc


def default_home() -> Path:
    return Workspace.from_env().home / "jobs"
