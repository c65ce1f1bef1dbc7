"""runlock.py: one process per output folder on an OS lock that dies with its holder."""
import os
import signal

import pytest

from errors import InputError
from runlock import RunLock


def test_a_second_lock_in_the_same_process_is_refused_naming_this_pid(tmp_path):
    with RunLock(tmp_path, "training") as lock:
        assert lock.held and (tmp_path / ".lock").read_text() == f"{os.getpid()} training\n"
        with pytest.raises(InputError, match=f"in use by another training \\(process {os.getpid()}\\)"):
            RunLock(tmp_path, "training").acquire()
        with pytest.raises(InputError, match="in use by another evaluation"):
            with RunLock(tmp_path, "evaluation"):
                pass
    assert not (tmp_path / ".lock").exists()  # removed on release
    with RunLock(tmp_path, "training"):  # and free again
        pass


def test_another_process_holds_it_until_it_is_killed(tmp_path, lock_holder, capsys):
    holder = lock_holder(tmp_path, "evaluation")
    with pytest.raises(InputError, match=f"{tmp_path} is in use by another evaluation \\(process {holder.pid}\\); "
                                         "wait for it, stop it, or choose another output folder"):
        RunLock(tmp_path, "evaluation").acquire()
    holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel releases its lock
    holder.wait()
    with RunLock(tmp_path, "evaluation"):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    assert f"taking over {tmp_path / '.lock'}, left by process {holder.pid}" in capsys.readouterr().err


def test_a_stale_file_never_blocks(tmp_path, capsys):
    (tmp_path / ".lock").write_text("")  # empty, as a holder killed before writing its PID leaves it
    with RunLock(tmp_path, "training"):
        pass
    (tmp_path / ".lock").write_text("not a pid\n")
    with RunLock(tmp_path / "new" / "run", "training"):  # the folder is created
        assert (tmp_path / "new" / "run" / ".lock").is_file()
    with RunLock(tmp_path, "training"):
        pass
    assert "taking over" not in capsys.readouterr().err  # nothing named, nothing to say


def test_a_folder_below_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="cannot hold the training .*pass a writable output folder"):
        RunLock(tmp_path / "f" / "run", "training").acquire()
