"""End to end through the real mount: the first thing a user does."""

import os
import re
import subprocess

from util import read


def sh(cmd, cwd):
    return subprocess.run(["sh", "-c", cmd], cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def test_help(run_streamfs):
    r = run_streamfs("--help")
    text = r.stdout + r.stderr
    assert "streamfs" in text
    for opt in ("remote=", "roll=", "framing=", "max_event=", "allow_other",
                "default_permissions", "allow_other_without_permissions",
                "exit status"):
        assert opt in text, "--help does not mention " + opt


def test_version(run_streamfs):
    r = run_streamfs("--version")
    assert re.search(r"streamfs.*\d+\.\d+", r.stdout + r.stderr)


def test_echo_and_cat(mount):
    m = mount()
    sh("mkdir acme && echo hello >> acme/orders", cwd=m.mnt)
    assert os.listdir(m.mnt) == ["acme"]
    assert os.listdir(m.path("acme")) == ["orders"]
    assert sh("cat acme/orders", cwd=m.mnt).stdout == b"hello\n"
    sh("echo world >> acme/orders", cwd=m.mnt)
    assert read(m.path("acme", "orders")) == b"hello\nworld\n"
    assert os.stat(m.path("acme", "orders")).st_size == 12


def test_survives_remount(mount):
    m = mount()
    sh("mkdir acme && printf 'a\\nb\\n' >> acme/orders", cwd=m.mnt)
    m.remount()
    assert read(m.path("acme", "orders")) == b"a\nb\n"
