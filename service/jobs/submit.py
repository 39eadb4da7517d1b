"""What a job submission may ask, checked before BentoML queues it: the recording (an upload, or a
path under CHORUS_ANALYZE_ROOT that stays inside it, symlinks included) and the options of
`chorus analyze`. Every refusal is a ServiceError with what is wrong and what is accepted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analyze.detections import UnknownSpeciesError, check_species
from analyze.sources import SourceError, expand_sources
from analyze.writers import DEFAULT_FORMATS, OutputError, check_formats
from service.errors import BadRequest, Forbidden, InvalidParameter, NotFound, TooManyRequests
from service.jobs.store import JobRequest, JobStore, TooManyJobs

FIELDS = ("upload_id", "path", "formats", "min_confidence", "top_k", "merge", "species", "exclude", "channels")


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"{name} must be a list of strings, got {value!r}")
    return value


def in_client_terms(text: str, folders: dict[Path, str]) -> str:
    """text with each of the server's folders said as clients know it (the analyze root's files by
    their path under it): where those folders lie stays the server's."""
    for folder, name in folders.items():
        text = text.replace(str(folder) + os.sep, "").replace(str(folder), name)
    return text


def server_path(root: str | None, path: Any) -> Path:
    """A path a client names on the server: relative to the analyze root, and inside it once every
    symlink is followed (403 otherwise)."""
    if root is None:
        raise Forbidden("jobs on server paths are off; upload the recording, or set CHORUS_ANALYZE_ROOT on the server")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidParameter(f"path must be a non-empty string relative to the analyze root, got {path!r}")
    base = Path(root).resolve()
    if Path(path).is_absolute():
        raise Forbidden(f"path {path!r} is absolute; name a file or folder relative to the analyze root")
    try:
        target = (base / path).resolve()
        if not target.is_relative_to(base):
            raise Forbidden(f"path {path[:300]!r} leads outside the analyze root")
        found = target.exists()
    except (OSError, ValueError) as exc:  # a name over 255 bytes, a lone surrogate the file system cannot encode
        raise InvalidParameter(f"path {path[:300]!r} is no path this server's file system can hold: {type(exc).__name__}") from None
    except RuntimeError:  # what resolve() raises for a symbolic link that leads back to itself
        raise InvalidParameter(f"path {path[:300]!r} goes round a loop of symbolic links; name a file or folder") from None
    if not found:
        raise NotFound(f"no file or folder {path[:300]!r} under the analyze root")
    return target


def outside(files: list[Path], folders: list[Path]) -> list[Path]:
    """The files whose real path (every symlink followed) lies in none of the folders, with those whose
    links go round a loop (no real path to check)."""
    real_folders = [folder.resolve() for folder in folders]

    def inside(file: Path) -> bool:
        try:
            real = file.resolve()
        except RuntimeError:  # a loop of links
            return False
        return any(real.is_relative_to(folder) for folder in real_folders)

    return [f for f in files if not inside(f)]


def take_place_for_a_job(store: JobStore, max_unfinished: int) -> Path:
    """A place for the job a submission becomes (JobStore.take_place), or 429 when max_unfinished
    jobs are queued or running or about to be: each takes a folder, a journal and engine time, and
    a client could otherwise queue the same folder a thousand times."""
    try:
        return store.take_place(max_unfinished)
    except TooManyJobs as full:
        raise TooManyRequests(
            f"{full.args[0]} jobs are queued or running, the server's limit (CHORUS_MAX_UNFINISHED_JOBS);"
            " submit again once some have finished, or cancel some (POST /jobs/{id}/cancel)"
        ) from None


def check_submission(body: Any, store: JobStore, root: str | None, labels: list[str]) -> tuple[JobRequest, Path | None]:
    """(the job's request, the upload folder it takes over, if any)."""
    if not isinstance(body, dict):
        raise BadRequest('a job submission is a JSON object like {"upload_id": "..."} or {"path": "site1/"}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidParameter(f"unknown field(s) {unknown}; a submission has {list(FIELDS)}")
    given = [name for name in ("upload_id", "path") if body.get(name) is not None]
    if len(given) != 1:
        raise InvalidParameter("send exactly one of upload_id (from POST /jobs/uploads) or path (under the analyze root)")
    upload: Path | None = None
    if given == ["upload_id"]:
        if not isinstance(body["upload_id"], str):
            raise InvalidParameter(f"upload_id must be the string POST /jobs/uploads answered, got {body['upload_id']!r}")
        try:
            upload = store.upload_path(body["upload_id"])
        except KeyError:
            raise NotFound(f"no upload {body['upload_id']!r}; upload the recording with POST /jobs/uploads first") from None
        sources = [str(upload)]
    else:
        target = server_path(root, body["path"])
        base = Path(root or "").resolve()
        try:
            files = expand_sources([str(target)])
        except SourceError as exc:  # said in the client's terms: where the analyze root is stays the server's
            raise InvalidParameter(in_client_terms(str(exc), {base: "the analyze root"})) from None
        escaping = outside(files, [base])
        if escaping:
            raise Forbidden(f"{len(escaping)} file(s) under {body['path']!r} are links to outside the analyze root (or round a loop)")
        sources = [str(target)]
    formats = _strings(body.get("formats", sorted(DEFAULT_FORMATS)), "formats")
    min_confidence = body.get("min_confidence")
    if min_confidence is not None and (
        isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or not 0 <= min_confidence <= 1
    ):
        raise InvalidParameter(f"min_confidence must be a number from 0 to 1 (or absent: the calibrated threshold), got {min_confidence!r}")
    top_k = body.get("top_k", 3)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidParameter(f"top_k must be an integer of at least 1 (or null: no limit), got {top_k!r}")
    if not isinstance(body.get("merge", False), bool):
        raise InvalidParameter(f"merge must be true or false, got {body['merge']!r}")
    if body.get("channels", "mix") not in ("mix", "each"):
        raise InvalidParameter(f"channels must be 'mix' or 'each', got {body['channels']!r}")
    try:
        check_formats(formats, body.get("channels", "mix"))
    except OutputError as exc:
        raise InvalidParameter(f"formats: {exc}") from None
    species = _strings(body["species"], "species") if body.get("species") is not None else None
    exclude = _strings(body.get("exclude", []), "exclude")
    try:
        check_species(set(species or ()) | set(exclude), labels)
    except UnknownSpeciesError as exc:
        raise InvalidParameter(str(exc), labels=labels) from None
    request = JobRequest(
        sources=sources,
        formats=formats,
        min_confidence=None if min_confidence is None else float(min_confidence),
        top_k=top_k,
        merge=body.get("merge", False),
        species=species,
        exclude=exclude,
        channels=body.get("channels", "mix"),
    )
    return request, upload
