#!/usr/bin/env python3
"""A slow disk for the tests: a read-only FUSE file system (fusepy) whose every lookup and read
of a file waits DELAY seconds, and whose entries are never cached by the kernel (so each open
asks it again). `slowN.txt` (N = 0..99) holds `slow file N\\n`; `late.txt` (`late file\\n`) is
found at once and only its reads wait.

    python3 slowfs.py MOUNTPOINT DELAY

Runs in the foreground until unmounted (fusermount -u) or killed.
"""

import errno
import stat
import sys
import time

from fuse import FUSE, FuseOSError, Operations


class Slow(Operations):
    def __init__(self, delay):
        self.delay = delay
        self.files = {f"/slow{i}.txt": f"slow file {i}\n".encode() for i in range(100)}
        self.files["/late.txt"] = b"late file\n"
        self.t = time.time() - 3600

    def getattr(self, path, fh=None):
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2,
                        st_ctime=self.t, st_mtime=self.t, st_atime=self.t)
        if path in self.files:
            if path != "/late.txt":
                time.sleep(self.delay)
            return dict(st_mode=stat.S_IFREG | 0o644, st_nlink=1, st_size=len(self.files[path]),
                        st_ctime=self.t, st_mtime=self.t, st_atime=self.t)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", ".."] + [p[1:] for p in self.files]

    def open(self, path, flags):
        if path not in self.files:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        time.sleep(self.delay)
        return self.files[path][offset:offset + size]


if __name__ == "__main__":
    FUSE(Slow(float(sys.argv[2])), sys.argv[1], foreground=True, ro=True, allow_other=True,
         attr_timeout=0, entry_timeout=0, direct_io=False)
