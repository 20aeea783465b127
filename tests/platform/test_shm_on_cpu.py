"""Which shared-memory segments a finished run may remove: those new since its start that no live process maps or
holds open, matched by inode (a named semaphore is mapped under a temporary name before it gets its own)."""

import mmap
import multiprocessing
import os

from verl_ext.platform import shm


def _mapped(path):
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 4096)


def test_remove_orphans_keeps_what_is_mapped_or_open(tmp_path):
    before = shm.snapshot(tmp_path)
    for name in ("psm_unused", "psm_open", "psm_mapped", "tmp_sem"):
        (tmp_path / name).write_bytes(b"\0" * 4096)
    held = open(tmp_path / "psm_open", "rb")
    mapped = _mapped(tmp_path / "psm_mapped")
    semaphore = _mapped(tmp_path / "tmp_sem")  # as glibc's sem_open: map a temporary file, then link its name
    os.link(tmp_path / "tmp_sem", tmp_path / "sem.mp-test")
    os.unlink(tmp_path / "tmp_sem")
    try:
        assert shm.in_use(tmp_path) >= {"psm_open", "psm_mapped", "sem.mp-test"}
        assert shm.remove_orphans(before, tmp_path) == ["psm_unused"]
        assert shm.snapshot(tmp_path) == {"psm_open", "psm_mapped", "sem.mp-test"}
    finally:
        held.close()
        mapped.close()
        semaphore.close()
    assert sorted(shm.remove_orphans(before, tmp_path)) == ["psm_mapped", "psm_open", "sem.mp-test"]


def test_a_live_multiprocessing_semaphore_is_in_use():
    """The case that broke a concurrent vLLM start: a spawn-context lock's named semaphore, held by this process."""
    before = shm.snapshot()
    lock = multiprocessing.get_context("spawn").Lock()
    new = {n for n in shm.snapshot() - before if n.startswith("sem.mp-")}
    assert new  # the lock's semaphore
    assert new <= shm.in_use()
    del lock
