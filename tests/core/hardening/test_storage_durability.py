"""Finding 10: local storage fsyncs the file and its folder around the atomic rename.

A spy on ``os.fsync`` and ``os.replace`` records what is synced and when: the
file's data before it is renamed into place, then the folder holding the new
name (and the parents of folders created for the key), so a crash after
``put()`` returned can lose neither the content nor the name.
"""

from __future__ import annotations

import os
import stat

import pytest

from plugboard.providers.storage import LocalStorage


@pytest.fixture
def events(monkeypatch):
    log: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        log.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", (st.st_dev, st.st_ino)))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        st = os.stat(dst)
        log.append(("replace", (st.st_dev, st.st_ino)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def inode(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


async def test_put_syncs_file_then_folder(tmp_path, events):
    storage = LocalStorage(root=tmp_path / "files")
    await storage.start()
    stored = await storage.put("uploads/2026/a.txt", b"hello")
    path = storage.path(stored.key)
    assert path.read_bytes() == b"hello"
    file_id, folder_id = inode(path), inode(path.parent)
    renamed = events.index(("replace", file_id))
    assert ("fsync-file", file_id) in events[:renamed], events  # data before the name
    synced_dirs = [i for i, (kind, what) in enumerate(events) if kind == "fsync-dir" and what == folder_id]
    assert synced_dirs and synced_dirs[-1] > renamed, events  # the name after the rename
    # 'uploads/2026' was created for this key: its parents hold new names too.
    assert ("fsync-dir", inode(path.parent.parent)) in events
    assert ("fsync-dir", inode(path.parent.parent.parent)) in events


async def test_overwrite_syncs_the_folder_again(tmp_path, events):
    storage = LocalStorage(root=tmp_path / "files")
    await storage.start()
    await storage.put("a.txt", b"one")
    events.clear()
    stored = await storage.put("a.txt", b"two")
    path = storage.path(stored.key)
    assert path.read_bytes() == b"two"
    assert ("fsync-dir", inode(path.parent)) in events
