"""Git, for `--changed-since REF` (which lines changed) and SARIF (repository-relative paths).

The repository root is found by looking for `.git` (a directory, or a file in worktrees and
submodules) upward from a file: no subprocess, so SARIF output and config discovery stay cheap.
Only `--changed-since` runs `git`, once per repository for all its files.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
_ROOTS: dict[str, str | None] = {}
_CHUNK = 200  # paths per git invocation


class GitError(Exception):
    """`--changed-since` cannot work: not a repository, a bad ref, no git."""


def repo_root(path: str) -> str | None:
    """The work tree root holding `path` (a file or directory), or None outside any."""
    real = os.path.realpath(path)
    start = real if os.path.isdir(real) else os.path.dirname(real)
    seen = []
    d = start
    while True:
        if d in _ROOTS:
            root = _ROOTS[d]
            break
        seen.append(d)
        if os.path.exists(os.path.join(d, ".git")):
            root = d
            break
        parent = os.path.dirname(d)
        if parent == d:
            root = None
            break
        d = parent
    for s in seen:
        _ROOTS[s] = root
    return root


# A file's changed lines: None means the whole file (untracked or new), else sorted ranges.
Changes = list[tuple[int, int]] | None


def _git(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", root, "-c", "core.quotepath=off", *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except FileNotFoundError:
        raise GitError("--changed-since needs git, which is not installed") from None


def changed_lines(paths: Iterable[str], ref: str) -> dict[str, Changes]:
    """Lines of each path added or changed since `ref` (`git diff --unified=0 REF`, working
    tree included); untracked files count as wholly changed. Paths without changes are absent.
    A deletion marks the lines on both sides of it."""
    by_root: dict[str, dict[str, str]] = {}
    for path in paths:
        root = repo_root(path)
        if root is None:
            raise GitError(f"--changed-since: {path} is not inside a git repository")
        rel = os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")
        by_root.setdefault(root, {})[rel] = path
    out: dict[str, Changes] = {}
    for root, files in by_root.items():
        proc = _git(
            root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
        if proc.returncode != 0:
            raise GitError(f"--changed-since: {ref!r} is not a commit in the repository {root}")
        commit = proc.stdout.strip()
        rels = sorted(files)
        for i in range(0, len(rels), _CHUNK):
            chunk = rels[i : i + _CHUNK]
            diff = _git(
                root,
                "diff",
                "--no-ext-diff",
                "--no-color",
                "--no-renames",
                "--unified=0",
                commit,
                "--",
                *chunk,
            )
            if diff.returncode != 0:
                raise GitError(f"--changed-since: git diff failed: {diff.stderr.strip()}")
            for rel, ranges in _parse_diff(diff.stdout).items():
                if rel in files:
                    out[files[rel]] = ranges
            untracked = _git(root, "ls-files", "--others", "-z", "--", *chunk)
            for rel in untracked.stdout.split("\0"):
                if rel in files:
                    out[files[rel]] = None
    return out


def _parse_diff(text: str) -> dict[str, Changes]:
    out: dict[str, Changes] = {}
    current: list[tuple[int, int]] | None = None
    for line in text.split("\n"):
        if line.startswith("+++ "):
            target = line[4:]
            if target == "/dev/null":
                current = None
                continue
            current = out.setdefault(target[2:] if target.startswith("b/") else target, [])  # type: ignore[assignment]
        elif line.startswith("@@") and current is not None:
            m = _HUNK.match(line)
            if m is None:
                continue
            start, count = int(m.group(1)), int(m.group(2) or "1")
            if count == 0:  # pure deletion after line `start`
                current.append((max(start, 1), start + 1))
            else:
                current.append((start, start + count - 1))
    return out


def overlaps(changes: Changes, first: int, last: int) -> bool:
    if changes is None:
        return True
    return any(a <= last and first <= b for a, b in changes)
