"""One `enricher lint` run on two cores: each process reads half the files and checks them.

Why: reading YAML and parsing PromQL is most of a large run, and promtool uses more than one
core for it too. After the file list is known the process forks. Each side reads its half,
and the two swap what they read (rules not yet parsed: cheap to pickle), so both hold every
rule for the cross-file lookups (recording rules, duplicates, dependencies). Each then checks
only its own files, parsing each rule's PromQL once, in the process that checks it; the child
sends back its findings and the parent adds the checks over the whole set. Any failure of the
child (it died, a hand-over broke) and the parent does that half itself: the result never
depends on the split, only the time does.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import threading
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, BinaryIO, TextIO

from enricher.lint import engine
from enricher.lint.config import Config
from enricher.lint.loader import Inputs, Target, discover, finish, load_targets
from enricher.lint.model import Finding

# Below this many bytes of rule files a second process costs more than it saves.
MIN_BYTES = 400_000
# The parent's share of the bytes: after both halves are checked it still runs the checks
# over the whole set, sorts and prints, so it takes a little less.
PARENT_SHARE = 0.47
_LEN = struct.Struct("<Q")

ConfigsFor = Callable[[list[str]], Mapping[str, Config]]


def read_and_lint(
    paths: list[str],
    stdin: TextIO,
    config: Config,
    configs_for: ConfigsFor | None,
    prometheus: Any = None,
    today: date | None = None,
) -> tuple[Inputs, Mapping[str, Config], list[Finding]]:
    """Read `paths` and lint them: `(inputs, per-file configs, findings)`.

    `configs_for(paths)` gives each file its configuration (it may raise ConfigError, which
    propagates). Live mode (`prometheus`) and small runs stay in one process.
    """
    targets = discover(paths, stdin)
    mine, theirs = _halves(targets)
    if prometheus is not None or not theirs or not _can_fork():
        inputs = finish(targets, load_targets(targets))
        configs = configs_for([rf.path for rf in inputs.files]) if configs_for else {}
        return inputs, configs, engine.lint(inputs, config, prometheus, configs, today)
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        for fd in (to_parent_r, to_parent_w, to_child_r, to_child_w):
            os.close(fd)
        inputs = finish(targets, load_targets(targets))
        configs = configs_for([rf.path for rf in inputs.files]) if configs_for else {}
        return inputs, configs, engine.lint(inputs, config, prometheus, configs, today)
    if pid == 0:
        os.close(to_parent_r)
        os.close(to_child_w)
        _child(targets, theirs, to_parent_w, to_child_r, config, configs_for, today)
    os.close(to_parent_w)
    os.close(to_child_r)
    from_child, to_child = os.fdopen(to_parent_r, "rb"), os.fdopen(to_child_w, "wb")
    try:
        return _parent(targets, mine, theirs, from_child, to_child, pid, config, configs_for, today)
    finally:
        for pipe in (from_child, to_child):
            with contextlib.suppress(OSError):  # a child that died leaves a broken pipe
                pipe.close()


def _can_fork() -> bool:
    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return False
    return os.environ.get("ENRICHER_LINT_JOBS", "") != "1"


def _halves(targets: list[Target]) -> tuple[list[Target], list[Target]]:
    """Split the files in two runs of about equal size (see PARENT_SHARE), keeping order."""
    sizes = []
    for t in targets:
        if t.text is not None:
            sizes.append(len(t.text))
            continue
        try:
            sizes.append(os.path.getsize(t.path) if t.path else 0)
        except OSError:
            sizes.append(0)
    total = sum(sizes)
    if total < MIN_BYTES or sum(1 for t in targets if t.path) < 2:
        return targets, []
    count = 0
    for i, size in enumerate(sizes):
        count += size
        if count >= total * PARENT_SHARE:
            return targets[: i + 1], targets[i + 1 :]
    return targets, []


def _child(
    targets: list[Target],
    theirs: list[Target],
    out_fd: int,
    in_fd: int,
    config: Config,
    configs_for: ConfigsFor | None,
    today: date | None,
) -> None:
    """Read the second half, swap it for the first, check the second half, exit."""
    code = 0
    try:
        with os.fdopen(out_fd, "wb") as out, os.fdopen(in_fd, "rb") as inp:
            part = load_targets(theirs)
            _send(out, part)
            first = _recv(inp)
            inputs = finish(targets, first, part)
            configs = configs_for([rf.path for rf in inputs.files]) if configs_for else {}
            own = frozenset(rf.path for rf in part.files)
            _send(out, engine.lint(inputs, config, None, configs, today, own, cross=False))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _parent(
    targets: list[Target],
    mine: list[Target],
    theirs: list[Target],
    from_child: BinaryIO,
    to_child: BinaryIO,
    pid: int,
    config: Config,
    configs_for: ConfigsFor | None,
    today: date | None,
) -> tuple[Inputs, Mapping[str, Config], list[Finding]]:
    part = load_targets(mine)
    # Send our half from a thread while reading the child's: both halves are larger than a
    # pipe's buffer, so writing first on both sides would block both.
    sender = threading.Thread(target=_send_quietly, args=(to_child, part), daemon=True)
    sender.start()
    other = _recv_or_none(from_child)
    child_ok = other is not None
    if other is None:
        other = load_targets(theirs)
    sender.join()
    inputs = finish(targets, part, other)
    configs = configs_for([rf.path for rf in inputs.files]) if configs_for else {}
    own = frozenset(rf.path for rf in part.files)
    found = engine.lint(inputs, config, None, configs, today, own, cross=True)
    theirs_found = _recv_or_none(from_child) if child_ok else None
    _, status = os.waitpid(pid, 0)
    if theirs_found is None or status != 0:
        rest = frozenset(rf.path for rf in other.files)
        theirs_found = engine.lint(inputs, config, None, configs, today, rest, cross=False)
    found.extend(theirs_found)
    found.sort(key=Finding.sort_key)
    return inputs, configs, found


def _send(out: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)))
    out.write(data)
    out.flush()


def _send_quietly(out: BinaryIO, obj: object) -> None:
    with contextlib.suppress(OSError, ValueError):  # the child is gone: we do its half
        _send(out, obj)


def _recv(inp: BinaryIO) -> Any:
    head = inp.read(_LEN.size)
    if len(head) != _LEN.size:
        raise EOFError("the other process closed the pipe")
    (size,) = _LEN.unpack(head)
    data = inp.read(size)
    if len(data) != size:
        raise EOFError("the other process closed the pipe")
    return pickle.loads(data)


def _recv_or_none(inp: BinaryIO) -> Any:
    try:
        return _recv(inp)
    except Exception:  # a dead child or a broken hand-over: the caller does the work itself
        return None
