#!/usr/bin/env python3
"""lfsimage: the littlefs image of the emulated Pico's filesystem (CPython, littlefs-python).

    python tools/rp2emu/lfsimage.py build IMAGE DIR [--add DEST=SRC ...]
    python tools/rp2emu/lfsimage.py ls IMAGE
    python tools/rp2emu/lfsimage.py get IMAGE PATH [OUT]

The MicroPython RPI_PICO image keeps a littlefs v2 filesystem in the last 1408 KiB of the
2 MiB flash (offset 0xA0000, 352 blocks of 4096 bytes; the firmware mounts it at / with
VfsLfs2's defaults: read/prog size 32, lookahead 32). `build` writes every file under DIR
(e.g. the dist of `make dist BOARD=rp2_pico`) into a fresh image of exactly that geometry;
`--add /boot.py=file` puts single extra files. `ls` and `get` read an image back (the flash
the runner saved after a run holds the firmware's /data records).
"""
import os
import sys

FS_OFFSET = 0xA0000
BLOCK_SIZE = 4096
BLOCK_COUNT = 352
FLASH_BYTES = 2 * 1024 * 1024


class ImageError(Exception):
    pass


def _fs(data=None):
    try:
        from littlefs import LittleFS
    except ImportError as e:  # the venv is older than requirements-dev.txt
        raise ImageError("littlefs-python is missing: run `make venv` (%s)" % e) from None
    kw = dict(block_size=BLOCK_SIZE, block_count=BLOCK_COUNT, read_size=32, prog_size=32,
              lookahead_size=32, block_cycles=100, name_max=255)
    if data is None:
        return LittleFS(**kw)
    if len(data) != BLOCK_SIZE * BLOCK_COUNT:
        raise ImageError("a filesystem image has %d bytes, not %d"
                         % (BLOCK_SIZE * BLOCK_COUNT, len(data)))
    fs = LittleFS(mount=False, **kw)
    fs.context.buffer[:] = data
    try:
        fs.mount()
    except Exception as e:  # littlefs raises LittleFSError with a negative code
        raise ImageError("no littlefs filesystem in the image (%s)" % e) from None
    return fs


def _mkdirs(fs, path):
    cur = ""
    for part in path.strip("/").split("/")[:-1]:
        cur += "/" + part
        try:
            fs.mkdir(cur)
        except Exception:  # exists
            pass


def build(files):
    """files: dict of device path -> bytes. Returns the image (BLOCK_SIZE * BLOCK_COUNT bytes)."""
    fs = _fs()
    for dest in sorted(files):
        if not dest.startswith("/"):
            raise ImageError("device paths are absolute: %r" % dest)
        _mkdirs(fs, dest)
        with fs.open(dest, "wb") as f:
            f.write(files[dest])
    return bytes(fs.context.buffer)


def tree(root):
    """Every file under root as {"/rel/path": bytes}."""
    if not os.path.isdir(root):
        raise ImageError("no such folder: %s" % root)
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root).replace(os.sep, "/")
            with open(p, "rb") as f:
                out["/" + rel] = f.read()
    return out


def listing(image):
    """{path: size} of every file in an image (bytes of the filesystem region or a flash dump)."""
    fs = _fs(_region(image))
    out = {}
    for top, _, names in fs.walk("/"):
        for n in names:
            p = (top.rstrip("/") + "/" + n) if top != "/" else "/" + n
            out[p] = fs.stat(p).size
    return out


def read(image, path):
    fs = _fs(_region(image))
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except Exception:
        raise ImageError("no file %s in the image" % path) from None


def _region(image):
    if len(image) == FLASH_BYTES:  # a whole flash dump
        return image[FS_OFFSET:FS_OFFSET + BLOCK_SIZE * BLOCK_COUNT]
    return image


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("image")
    b.add_argument("dir")
    b.add_argument("--add", action="append", default=[], metavar="DEST=SRC")
    ls = sub.add_parser("ls")
    ls.add_argument("image")
    g = sub.add_parser("get")
    g.add_argument("image")
    g.add_argument("path")
    g.add_argument("out", nargs="?")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            files = tree(a.dir)
            for item in a.add:
                if "=" not in item:
                    raise ImageError("--add wants DEST=SRC, got %r" % item)
                dest, src = item.split("=", 1)
                try:
                    with open(src, "rb") as f:
                        files[dest] = f.read()
                except OSError as e:
                    raise ImageError("cannot read %s: %s" % (src, e.strerror)) from None
            img = build(files)
            with open(a.image, "wb") as f:
                f.write(img)
            print("%s: %d files, %d bytes" % (a.image, len(files), sum(map(len, files.values()))))
            return 0
        with open(a.image, "rb") as f:
            img = f.read()
        if a.cmd == "ls":
            for p, n in sorted(listing(img).items()):
                print("%8d %s" % (n, p))
        else:
            data = read(img, a.path)
            if a.out:
                with open(a.out, "wb") as f:
                    f.write(data)
            else:
                sys.stdout.buffer.write(data)
        return 0
    except (ImageError, OSError) as e:
        print("lfsimage: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
