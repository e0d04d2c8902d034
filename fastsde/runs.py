"""Long jobs that survive a stop: results numbered 0..N-1 (samples, per-image likelihoods) saved to
a folder in parts as they come, beside a record of what they depend on, and merged at the end.

A run named `name` in folder `out` is three kinds of file: <name>.json (the settings: a rerun
resumes only if it has the same), <name>_part<first item>.npz ('indices' and the result arrays of
some items, written atomically) and <name>.npz (the merged results of items 0..n-1, in order,
without 'indices'). Whatever a process saved survives a crash; a rerun computes only what is
missing, whichever process or batch computed the rest. One process at a time holds a run
(.<name>.lock, see claim): a second one is refused while the first runs.
"""

import contextlib
import fcntl
import glob
import json
import os
import signal
import time
import zipfile

import numpy as np

from .checkpoint import atomic_write, atomic_write_bytes


def save_npz(path, compressed=True, **arrays):
    """np.savez_compressed(path, **arrays) (np.savez if not `compressed`), atomically."""

    def write(tmp):
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)

    atomic_write(path, write)


@contextlib.contextmanager
def open_npz(path):
    """np.load(path) of a .npz file in a `with`; a file that is not one raises a ValueError naming it."""
    try:
        f = np.load(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable .npz file ({why})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not a .npz file")
    with f:
        yield f


def _parts(out, name):
    return sorted(glob.glob(os.path.join(out, f"{name}_part*.npz")))


class Busy(ValueError):
    """Another process holds the run."""


def claim(out, name):
    """Holds run `name` in folder `out` for this process: an exclusive lock on <out>/.<name>.lock.
    Returns the open lock file; the hold ends when it is closed (use it in a `with`) or the process
    ends, however it ends. Raises Busy, naming the holder's process id, if another holds it."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out} exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f".{name}.lock")
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise Busy(
            f"{out} is in use: another process (pid {holder}) is writing its {name} now; wait until it "
            "ends, or use another folder"
        ) from None
    except BaseException:
        fh.close()
        raise
    fh.truncate(0)
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def start(out, name, settings, overwrite=False, also=()):
    """Starts run `name` in folder `out`, or resumes the one there: claims it (see claim), then
    writes <out>/<name>.json (`settings`, a JSON-able dict of what the results depend on) or checks
    that the run there has the same. overwrite: first deletes that run's files (and `also`, other
    file names in `out`). Returns the claim: hold it (in a `with`) until the run ends. Call it from
    one process."""
    held = claim(out, name)
    try:
        _start(out, name, settings, overwrite, also)
    except BaseException:
        held.close()
        raise
    return held


def _start(out, name, settings, overwrite, also):
    path, merged = os.path.join(out, f"{name}.json"), os.path.join(out, f"{name}.npz")
    settings = json.loads(json.dumps(settings))
    if overwrite:
        for old in [path, merged, *(os.path.join(out, f) for f in also), *_parts(out, name)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
    redo = "use another folder, or overwrite them (--overwrite, overwrite=True)"
    if os.path.exists(path):
        with open(path) as fh:
            try:
                there = json.load(fh)
            except ValueError as e:
                there = e
        if not isinstance(there, dict):
            why = f"not readable as JSON ({there})" if isinstance(there, ValueError) else "not a JSON object"
            raise ValueError(f"{path}: {why}; it should say how the {name} in {out} were made: {redo}")
        differ = differences(there, settings)
        if differ:
            raise ValueError(f"{out} holds {name} of another run ({'; '.join(differ)}): {redo}")
    elif os.path.exists(merged) or _parts(out, name):
        raise ValueError(f"{out} holds {name} but no {name}.json to say how they were made: {redo}")
    else:
        atomic_write_bytes(path, json.dumps(settings, indent=1))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(there, here, known_only=False):
    """What differs between two JSON-able dicts, nested keys dotted: ['seed: 0 there, 1 here', ...]
    ('key differs' where a value is too long to show). known_only: only the keys that `there` has."""
    a, b = _flat(there), _flat(here)
    b = {k: v for k, v in b.items() if k in a} if known_only else b
    short = lambda v: len(repr(v)) < 60  # noqa: E731
    return [
        f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" if short(a.get(k)) and short(b.get(k)) else f"{k} differs"
        for k in sorted({*a, *b})
        if a.get(k) != b.get(k)
    ]


def _rows(path, key):
    """The length of array `key` in the .npz at `path`, from its header (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as z, z.open(key + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return read(fh)[0][0]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz file with {key!r} ({e})") from None


def done(out, name, key):
    """The item numbers of run `name` already saved in `out` (a set); key: a result array's name."""
    merged = os.path.join(out, f"{name}.npz")
    have = set(range(_rows(merged, key))) if os.path.exists(merged) else set()
    for path in _parts(out, name):
        with open_npz(path) as f:
            have.update(f["indices"].tolist())
    return have


def todo(out, name, key, count):
    """(the item numbers still to compute, the run's total): the total is `count`, or more if `out`
    holds higher numbers (a longer run cut short), and the numbers below it that `out` lacks are
    to compute. Processes that share them out must all call it before any of them saves more."""
    have = done(out, name, key)
    total = max(count, max(have) + 1 if have else 0)
    return [i for i in range(total) if i not in have], total


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # as an exception, so that `with` blocks run their exits


class Saver:
    """Collects results with add(indices, **arrays) and saves them as a part of run `name` in `out`
    at least every `seconds`, and on leaving its `with` block, error, Ctrl-C or SIGTERM included (a
    batch scheduler's notice before it kills a job: inside the block it ends the process with
    SystemExit(143) once the results are saved)."""

    def __init__(self, out, name, seconds=60):
        self.out, self.name, self.seconds = out, name, seconds
        self.pending, self.saved = [], time.time()

    def add(self, indices, **arrays):
        self.pending.append((list(indices), arrays))
        if time.time() - self.saved >= self.seconds:
            self.save()

    def save(self):
        if self.pending:
            indices = [i for chunk, _ in self.pending for i in chunk]
            arrays = {k: np.concatenate([a[k] for _, a in self.pending]) for k in self.pending[0][1]}
            # Named after its first item, which no file in `out` held: a new name, never an overwrite.
            # Not compressed: zlib runs at some 50 MB/s, seconds a minute for a fast sampler's images.
            save_npz(
                os.path.join(self.out, f"{self.name}_part{indices[0]:09d}.npz"),
                compressed=False,
                indices=np.asarray(indices),
                **arrays,
            )
            self.pending.clear()
        self.saved = time.time()

    def __enter__(self):
        self.sigterm = None
        with contextlib.suppress(ValueError):  # signal handlers can only be set in the main thread
            self.sigterm = signal.signal(signal.SIGTERM, _terminated)
        return self

    def __exit__(self, *exc):
        try:
            self.save()
        finally:
            if self.sigterm is not None:
                signal.signal(signal.SIGTERM, self.sigterm)


def merge(out, name):
    """Gathers <out>/<name>.npz and the parts beside it into <out>/<name>.npz (items 0..n-1 in
    order), then deletes the parts; checks that every number up to the largest is there. Returns
    the merged arrays (a dict)."""
    merged = os.path.join(out, f"{name}.npz")
    parts = _parts(out, name)
    if not parts and not os.path.exists(merged):
        raise FileNotFoundError(f"{out}: no {name}.npz or {name}_part*.npz to merge")
    indices, arrays = [], {}
    for path in [merged] * os.path.exists(merged) + parts:
        with open_npz(path) as f:
            keys = [k for k in f.files if k != "indices"]
            for k in keys:
                arrays.setdefault(k, []).append(f[k])
            indices.append(f["indices"] if "indices" in f.files else np.arange(len(f[keys[0]])))
    indices = np.concatenate(indices)
    # A merge stopped between writing <name>.npz and deleting the parts leaves items twice: the first is kept.
    indices, first = np.unique(indices, return_index=True)
    if not np.array_equal(indices, np.arange(len(indices))):
        missing = sorted(set(range(int(indices[-1]) + 1)) - set(indices.tolist()))
        raise ValueError(
            f"{out}: {name} {missing[:5]}{' ...' if len(missing) > 5 else ''} are missing "
            f"({len(indices)} of 0..{indices[-1]} there)"
        )
    arrays = {k: np.concatenate(v)[first] for k, v in arrays.items()}
    if parts:
        save_npz(merged, **arrays)
    for path in parts:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return arrays
