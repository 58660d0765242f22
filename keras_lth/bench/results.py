"""The results directory of `keras-lth bench`: files, settings, shards, merging.

One directory holds one benchmark:

- `config.json`: the plan (settings, methods, densities, rounds, layer
  sizes, training-set size) and, once a shard has run there, the number of
  shards. The first invocation creates it (`os.link` of a complete temporary
  file, so two shards starting together cannot both create it); every later
  one is checked against it (`check_config`): other training settings are an
  error, and so is another run list or another shard count for a sharded
  directory.
- `results.jsonl`: the lines of an unsharded benchmark (whatever its
  `--jobs`: the main process alone writes it).
- `results-K-of-N.jsonl`: the lines of shard K of N (`--shard K/N`).

Each results file has one writer, by construction (one file per shard;
`WriterLock` refuses a second process on the same file where the filesystem
supports `flock`), and is rewritten whole through a temporary file and
`os.replace` as each run ends, so a kill leaves the old file or the new one,
never half a line; `os.replace` within one directory is atomic on local
filesystems and on NFS. An invocation skips every run found in any results
file of the directory, and `merged_lines` is what the summary is made from.

Shards split the plan's runs deterministically (`shard_runs`): every shard
computes the same partition from the plan alone, so a restarted shard does
exactly its own runs again, minus those already in the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
import warnings

try:
    import fcntl
except ImportError:  # not on Windows: no lock, a warning
    fcntl = None


class DirectoryError(ValueError):
    """A results directory that cannot take this benchmark: it holds another
    configuration or shard count, or another process writes the same file."""


RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
_SHARD_FILE = re.compile(r"^results-(\d+)-of-(\d+)\.jsonl$")


# ---------------------------------------------------------------------- #
# Shards
# ---------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based, like `$SLURM_ARRAY_TASK_ID` and
    `$JOB_COMPLETION_INDEX`).

    Args:
        index: This shard, `0 <= index < count`.
        count: The number of shards, at least 1.
    """

    index: int
    count: int

    def __post_init__(self):
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.index, self.count))
        if not ints or not 0 <= self.index < self.count:
            raise ValueError(
                "Received an invalid value for `shard`, expected K/N with integers "
                "0 <= K < N (0-based, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). "
                f"Received: shard={self.index!r}/{self.count!r}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`Shard` from `"K/N"`.

        Raises:
            ValueError: naming `--shard`, what it expects and what it received.
        """
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if match is None or not 0 <= int(match[1]) < int(match[2]):
            raise ValueError(
                "Received an invalid value for `--shard`, expected K/N with integers "
                "0 <= K < N (0-based, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). "
                f"Received: --shard={text!r}"
            )
        return cls(int(match[1]), int(match[2]))

    @property
    def file(self) -> str:
        return f"results-{self.index}-of-{self.count}.jsonl"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_runs(plan, shard: Shard) -> list:
    """The runs of `shard`, in plan order.

    Every run of the plan goes to one shard: longest first (training epochs),
    each to the shard with the fewest epochs so far, the lowest index on a
    tie. The partition depends on the plan alone, so every shard, started or
    restarted anywhere, computes the same one.
    """
    runs = plan.runs()
    load = [0] * shard.count
    mine = set()
    for i in sorted(range(len(runs)), key=lambda i: (-plan.epochs(runs[i]), i)):
        k = min(range(shard.count), key=lambda j: (load[j], j))
        load[k] += plan.epochs(runs[i])
        if k == shard.index:
            mine.add(i)
    return [run for i, run in enumerate(runs) if i in mine]


# ---------------------------------------------------------------------- #
# Results files
# ---------------------------------------------------------------------- #
def results_file(shard: Shard | None = None) -> str:
    """The file an invocation writes: `results.jsonl` or `results-K-of-N.jsonl`."""
    return RESULTS_FILE if shard is None else shard.file


def results_files(out) -> list:
    """The results files of a directory: `results.jsonl` first, then the
    shards' by shard count and index."""
    if not os.path.isdir(out):
        return []
    shards = []
    for name in os.listdir(out):
        match = _SHARD_FILE.match(name)
        if match:
            shards.append((int(match[2]), int(match[1]), name))
    names = [RESULTS_FILE] if os.path.exists(os.path.join(out, RESULTS_FILE)) else []
    return [os.path.join(out, n) for n in names + [n for _, _, n in sorted(shards)]]


def read_results(path) -> list:
    """The lines of a results file (an empty list when there is none)."""
    if not os.path.exists(path):
        return []
    lines = []
    with open(path) as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"'{path}' line {number} is not a results line ({e}); the benchmark "
                    "never writes one like it: was the file edited or copied partly?"
                ) from None
    return lines


def write_results(path, lines) -> None:
    """Writes all lines at once: a kill leaves the old file or the new one."""
    atomic_write(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


def line_key(line_or_run) -> tuple:
    """`(method, seed, density)` of a results line or a `Run`."""
    k = line_or_run["key"] if isinstance(line_or_run, dict) else line_or_run.key
    return (k["method"], k["seed"], k["density"])


def merged_lines(out) -> list:
    """The lines of every results file of `out`, each run once.

    Raises:
        DirectoryError: when two files hold one run with different configurations.
    """
    seen = {}
    for path in results_files(out):
        for line in read_results(path):
            first = seen.setdefault(line_key(line), (line, path))
            if first[0]["config"] != line["config"]:
                raise DirectoryError(
                    f"'{first[1]}' and '{path}' hold {line['key']} with different "
                    "configurations: this directory mixes two protocols."
                )
    return [line for line, _ in seen.values()]


def in_plan_order(plan, lines) -> list:
    """Lines in plan order (so an interrupted and resumed benchmark writes the
    same file as an uninterrupted one); lines of other plans keep theirs at
    the end."""
    index = {line_key(r): i for i, r in enumerate(plan.runs())}
    return sorted(lines, key=lambda line: index.get(line_key(line), len(index)))


def atomic_write(path, text) -> None:
    """Writes `path` through a temporary file and `os.replace`."""
    # A temporary name of its own: two processes writing the same file (the
    # summary of two shards ending together) never share one.
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


# ---------------------------------------------------------------------- #
# One writer per file
# ---------------------------------------------------------------------- #
class WriterLock:
    """An exclusive `flock` on `PATH.lock` while one process writes `PATH`.

    A second `keras-lth bench` writing the same file (the same shard started
    twice, or two unsharded runs in one directory) gets a clear error instead
    of overwriting the first one's lines. The lock is advisory and only a
    safety net: correctness rests on one file per shard. `flock` works on
    local disks and on NFS (Linux emulates it with NFS byte-range locks, so it
    needs a lock manager: a mount with `nolock` makes it node-local); Lustre
    needs the `flock` mount option. Where locking fails the benchmark warns
    and carries on without it. The lock goes with the process that held it;
    on NFS a crashed node's lock lasts until the server's lease ends (about
    90 s on NFSv4). The holder removes the lock file when it is done (a killed
    one leaves it behind, unlocked and harmless); a process that locked a
    file removed meanwhile tries again on the new one.
    """

    def __init__(self, path):
        self.path = path + ".lock"
        self._file = None

    def __enter__(self):
        if fcntl is None:
            warnings.warn(f"No file locking here: '{self.path}' is not locked.", stacklevel=2)
            return self
        while True:
            f = open(self.path, "a")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise DirectoryError(
                    f"Another process is writing '{self.path[: -len('.lock')]}' (it holds "
                    f"'{self.path}'): the same shard or directory runs twice. Wait for it "
                    "to end, or stop it; a restart then resumes where it stopped."
                ) from None
            except OSError as e:
                f.close()
                warnings.warn(
                    f"Could not lock '{self.path}' ({e}): this filesystem has no flock "
                    "support, so make sure one process at a time writes each results file.",
                    stacklevel=2,
                )
                return self
            try:
                current = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self._file = f
                return self
            f.close()  # its holder removed it after we opened it: lock the new one

    def __exit__(self, *exc):
        if self._file is not None:
            # Removed while still locked, so no one can lock this inode as
            # current after us (they check it against the path, above).
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------- #
# config.json: one benchmark per directory
# ---------------------------------------------------------------------- #
# The settings fields that only name or schedule the runs; every other
# settings field shapes a run's outcome (`Settings.config()`).
_RUN_LIST_SETTINGS = ("seeds", "preset", "densities", "levels", "steps_per_execution")


def read_config(out) -> dict | None:
    path = os.path.join(out, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_config(out, plan, shard: Shard | None = None) -> None:
    """Checks `plan` (and `shard`) against `out/config.json`, creating or
    updating it.

    The training protocol (every settings field that shapes a run's outcome,
    the training-set size, the layer sizes) must be the recorded one. A
    sharded directory also needs the recorded run list (methods, seeds,
    densities, rounds, preset) and shard count, since the shards' partition
    is computed from them; an unsharded directory may grow (more seeds, more
    methods), and `config.json` then records the new plan.

    Raises:
        DirectoryError: naming what differs, recorded and received.
    """
    path = os.path.join(out, CONFIG_FILE)
    config = {"plan": plan.config(), "shards": None if shard is None else shard.count}
    recorded = read_config(out)
    if recorded is None:
        if _create(path, config):
            return
        recorded = read_config(out)  # another shard created it first
    old, new = recorded["plan"], config["plan"]
    protocol = _differences(old, new, run_list=False)
    if protocol:
        raise DirectoryError(
            f"'{out}' holds runs of another configuration (recorded in {path}): "
            f"{'; '.join(protocol)}. Use another `--out` directory for another protocol."
        )
    shards = recorded.get("shards")
    if shard is not None and shards not in (None, shard.count):
        raise DirectoryError(
            f"Received an invalid value for `--shard`, expected K/{shards}: '{out}' is "
            f"shared by {shards} shards (recorded in {path}), and every shard of one "
            f"directory needs the same N. Received: --shard={shard}"
        )
    run_list = _differences(old, new, run_list=True)
    if run_list and (shard is not None or shards is not None):
        raise DirectoryError(
            f"'{out}' is a sharded benchmark with another run list (recorded in {path}): "
            f"{'; '.join(run_list)}. The shards of one directory must run the same "
            "methods, seeds and densities; use another `--out` directory."
        )
    if run_list or (shard is not None and shards is None):
        atomic_write(path, _dumps(config))


def _create(path, config) -> bool:
    """Creates `path` with `config` unless it exists; whether it did."""
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w") as f:
        f.write(_dumps(config))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic and exclusive, also on NFS
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: best effort
        if os.path.exists(path):
            return False
        os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _differences(old, new, run_list) -> list:
    """`"name: recorded X, received Y"` for the protocol or run-list fields."""
    fields = {}
    for name in set(old["settings"]) | set(new["settings"]):
        if (name in _RUN_LIST_SETTINGS) == run_list and name != "steps_per_execution":
            fields[name] = (old["settings"].get(name), new["settings"].get(name))
    names = ("methods", "densities", "rounds") if run_list else ("num_train", "sizes")
    for name in names:
        fields[name] = (old.get(name), new.get(name))
    if run_list:
        fields.pop("levels")  # they only name the default densities, compared as such
    return [
        f"{n}: recorded {a!r}, received {b!r}" for n, (a, b) in sorted(fields.items()) if a != b
    ]


def _dumps(config) -> str:
    return json.dumps(config, indent=1, sort_keys=True) + "\n"
