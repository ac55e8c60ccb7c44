"""Ordinary tools on a mounted streamfs: shell redirections, coreutils, dd,
Python, cp and rsync, byte for byte."""

import os
import random
import subprocess

import pytest

from util import append, getxattr, read, wait_until


def sh(cmd, cwd, check=True, input=None):
    return subprocess.run(["sh", "-c", cmd], cwd=cwd, check=check, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def test_shell_and_coreutils(mount):
    m = mount()
    sh("mkdir T && echo one >> T/s && printf 'two\\nthree\\n' >> T/s", m.mnt)
    assert sh("cat T/s", m.mnt).stdout == b"one\ntwo\nthree\n"
    assert sh("head -n 2 T/s", m.mnt).stdout == b"one\ntwo\n"
    assert sh("wc -l < T/s", m.mnt).stdout.strip() == b"3"
    assert sh("grep -c o T/s", m.mnt).stdout.strip() == b"2"
    assert getxattr(m.path("T", "s"), "streamfs.version") == "3"
    st = os.stat(m.path("T", "s"))
    assert st.st_size == 14
    # a line without its newline waits for the close, then gets one
    sh("printf 'four' >> T/s", m.mnt)
    assert read(m.path("T", "s")).endswith(b"three\nfour\n")


def test_dd_block_sizes(mount):
    m = mount()
    os.mkdir(m.path("T"))
    data = b"".join(b"line %06d %s\n" % (i, b"x" * (i % 97)) for i in range(5000))
    src = m.mnt.parent / "in.txt"
    src.write_bytes(data)
    for bs in ("1", "100", "4096", "65536", "1M"):
        name = "dd" + bs
        if bs == "1":
            cut = data.rindex(b"\n", 0, 3000) + 1
            sh("head -c %d %s | dd of=T/%s bs=1 oflag=append conv=notrunc status=none"
               % (cut, src, name), m.mnt)
            assert read(m.path("T", name)) == data[:cut]
            continue
        sh("dd if=%s of=T/%s bs=%s status=none" % (src, name, bs), m.mnt)
        assert read(m.path("T", name)) == data
        out = sh("dd if=T/%s bs=%s status=none" % (name, bs), m.mnt).stdout
        assert out == data


def test_python_open(mount):
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "py")
    with open(p, "a") as f:
        for i in range(1000):
            f.write("event %d\n" % i)
    with open(p) as f:
        lines = f.readlines()
    assert lines == ["event %d\n" % i for i in range(1000)]
    with open(p, "rb") as f:
        f.seek(6)
        assert f.read(2) == b"0\n"


def test_cp_text_and_raw_binary(mount, tmp_path):
    m = mount()
    os.mkdir(m.path("T"))
    text = b"".join(b"%d,%s\n" % (i, b"abc" * (i % 50)) for i in range(20000))
    (tmp_path / "t.csv").write_bytes(text)
    sh("cp %s T/t.csv && cp T/t.csv %s/back.csv" % (tmp_path / "t.csv", tmp_path), m.mnt)
    assert (tmp_path / "back.csv").read_bytes() == text
    # raw framing on the tenant: binary payloads, every write one event
    os.setxattr(m.path("T"), "user.streamfs.framing", b"raw")
    rnd = random.Random(7)
    blob = bytes(rnd.getrandbits(8) for _ in range(300000))
    (tmp_path / "b.bin").write_bytes(blob)
    sh("cp %s T/b.bin && cp T/b.bin %s/back.bin" % (tmp_path / "b.bin", tmp_path), m.mnt)
    assert (tmp_path / "back.bin").read_bytes() == blob
    assert getxattr(m.path("T", "b.bin"), "streamfs.framing") == "raw"


def test_reads_across_segments_byte_exact(mount, tmp_path):
    """Reads within one segment are answered from its file, reads that span
    two through a buffer: every size and offset gives the same bytes."""
    m = mount(opts="roll_size=16K")
    os.mkdir(m.path("T"))
    os.setxattr(m.path("T"), "user.streamfs.framing", b"raw")
    rnd = random.Random(11)
    blob = bytes(rnd.getrandbits(8) for _ in range(200000))
    sizes = []
    with open(m.path("T", "b"), "ab", buffering=0) as f:
        while sum(sizes) < len(blob):   # odd sizes: segments end mid-page
            at = sum(sizes)
            sizes.append(len(blob[at:at + rnd.choice((1, 999, 5003, 12007))]))
            f.write(blob[at:at + sizes[-1]])
    segs = [e for e in os.listdir(m.src / "tenants" / "T" / "seg") if e.endswith(".seg")]
    assert len(segs) > 8
    sh("cp T/b %s/back.bin" % tmp_path, m.mnt)
    assert (tmp_path / "back.bin").read_bytes() == blob
    for bs in ("1000", "4096", "65536", "1M"):
        assert sh("dd if=T/b bs=%s status=none" % bs, m.mnt).stdout == blob, bs
    # a view is read without the page cache: the daemon sees each offset
    # and size as asked, not whole pages
    for name, base in (("b@1", 0), ("b@-3", len(blob) - sum(sizes[-3:]))):
        fd = os.open(m.path("T", name), os.O_RDONLY)
        try:
            for _ in range(300):
                off = rnd.randrange(len(blob) - base + 10)
                n = rnd.choice((1, 100, 4096, 20000, 70000))
                got = os.pread(fd, n, off)
                assert got == blob[base + off:base + off + n], (name, off, n)
        finally:
            os.close(fd)
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
    assert read(m.path("T", "b")) == blob


def _tree(tmp_path):
    ref = tmp_path / "ref"
    for t, mode in (("acme", 0o750), ("beta", 0o755)):
        (ref / t).mkdir(parents=True)
        os.chmod(ref / t, mode)
        for i in range(3):
            p = ref / t / ("s%d.jsonl" % i)
            p.write_bytes(b"".join(b'{"n":%d,"t":"%s"}\n' % (j, t.encode())
                                   for j in range(200 * (i + 1))))
            os.chmod(p, 0o640 if i else 0o600)
    return ref


def test_rsync_round_trip_and_append(mount, tmp_path):
    ref = _tree(tmp_path)
    m = mount()
    sh("rsync -a %s/ %s/" % (ref, m.mnt), tmp_path)
    out = tmp_path / "out"
    sh("rsync -a %s/ %s/" % (m.mnt, out), tmp_path)
    r = sh("diff -r %s %s" % (ref, out), tmp_path, check=False)
    assert r.returncode == 0, r.stdout
    for t in ("acme", "beta"):
        assert os.stat(out / t).st_mode & 0o7777 == os.stat(ref / t).st_mode & 0o7777
        for i in range(3):
            a, b = os.stat(ref / t / ("s%d.jsonl" % i)), os.stat(out / t / ("s%d.jsonl" % i))
            assert a.st_mode == b.st_mode
            assert int(a.st_mtime) == int(b.st_mtime)
    # into an empty mount
    m2 = mount()
    sh("rsync -a %s/ %s/" % (out, m2.mnt), tmp_path)
    r = sh("diff -r %s %s" % (ref, m2.mnt), tmp_path, check=False)
    assert r.returncode == 0, r.stdout
    # --append extends existing streams
    p = ref / "acme" / "s0.jsonl"
    with open(p, "ab") as f:
        f.write(b'{"n":"more"}\n')
    sh("rsync -a --append %s/ %s/" % (ref, m2.mnt), tmp_path)
    assert read(m2.path("acme", "s0.jsonl")) == p.read_bytes()
    r = sh("diff -r %s %s" % (ref, m2.mnt), tmp_path, check=False)
    assert r.returncode == 0, r.stdout


def test_mtime_moves_and_utimens(mount):
    m = mount()
    os.mkdir(m.path("T"))
    p = m.path("T", "s")
    p.write_bytes(b"a\n")
    os.utime(p, (1000000000, 1000000000))
    assert os.stat(p).st_mtime == 1000000000
    with open(p, "ab") as f:
        f.write(b"b\n")
    assert os.stat(p).st_mtime > 1000000000
    os.chmod(p, 0o604)
    m.remount()
    assert os.stat(p).st_mode & 0o777 == 0o604


def test_segments_roll_by_age_and_by_sync_without_remote(mount, run_streamfs):
    """Without remote= no sync thread runs: the store's sealer closes a
    segment at `roll` age on its own, and `streamfs sync` seals at once;
    either way the next append starts a new segment file."""
    m = mount(opts="roll=1s")
    os.mkdir(m.path("T"))
    seg_dir = m.src / "tenants" / "T" / "seg"

    def segments():
        return len([e for e in os.listdir(seg_dir) if e.endswith(".seg")])

    lines = [b"first\n"]
    append(m.path("T", "s"), lines[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert segments() == 1

    def rolled():   # one line every 100 ms until a new segment holds one
        lines.append(b"line %d\n" % len(lines))
        append(m.path("T", "s"), lines[-1])
        return segments() == 2
    wait_until(rolled, timeout=15, interval=0.1, msg="no roll by age")
    run_streamfs("sync", m.mnt)
    lines.append(b"after sync\n")
    append(m.path("T", "s"), lines[-1])
    assert segments() == 3
    assert read(m.path("T", "s")) == b"".join(lines)


def test_move_and_copy_across_tenants_and_mounts(mount, tmp_path):
    """mv, cp -a and rsync -aX copy every listed xattr to the target: none may
    refuse, so the tools exit 0 with nothing on stderr."""
    m, m2 = mount(), mount()
    sh("mkdir A B C && printf '{\"id\":\"1\"}\\nx\\n' >> A/s && "
       "cp A/s A/t && cp A/s A/u", m.mnt)
    os.mkdir(m2.path("D"))
    want = read(m.path("A", "s"))
    assert want == b'{"id":"1"}\nx\n'
    for cmd, dst in (("mv A/s B/s", m.path("B", "s")),
                     ("cp -a A/t C/t", m.path("C", "t")),
                     ("rsync -aX A/u C/u", m.path("C", "u")),
                     ("cp -a A/t %s" % m2.path("D", "t"), m2.path("D", "t")),
                     ("rsync -aX A/u %s" % m2.path("D", "u"), m2.path("D", "u"))):
        r = sh(cmd, m.mnt, check=False)
        assert (r.returncode, r.stderr) == (0, b""), cmd
        assert read(dst) == want, cmd
        assert getxattr(dst, "streamfs.version") == "2", cmd
    assert not m.path("A", "s").exists()
    # a whole mount into another, roots and tenants included
    r = sh("rsync -aX %s/ %s/" % (m.mnt, m2.mnt), tmp_path, check=False)
    assert (r.returncode, r.stderr) == (0, b"")
    assert read(m2.path("B", "s")) == want
