"""What a user sees of an error: one line and an exit code (the CLI boundary)."""

from __future__ import annotations

import pytest
import torch

from adaptive_cache.stores.base import StoreError
from training.cli import main
from training.errors import EXIT_FAILED, EXIT_USAGE, WorkerDiedError, describe, worker_death


class _Fails(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        raise ValueError("on_bad_sample=skip: none of the 3 samples could be decoded")


def test_an_error_from_a_worker_is_its_own_message() -> None:
    loader = torch.utils.data.DataLoader(_Fails(), num_workers=1)
    with pytest.raises(ValueError) as err:
        next(iter(loader))
    assert "Original Traceback" in str(err.value)  # what torch re-raises
    assert describe(err.value) == (
        "on_bad_sample=skip: none of the 3 samples could be decoded",
        EXIT_USAGE,
    )


def test_store_and_config_errors_are_usage_errors_and_bugs_are_not() -> None:
    assert describe(StoreError("cache.disk_dir: disk store: cannot create /x")) == (
        "cache.disk_dir: disk store: cannot create /x",
        EXIT_USAGE,
    )
    assert describe(KeyError("x")) is None
    assert describe(RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed.")) is None


@pytest.mark.parametrize(
    ("text", "signal_name"),
    [
        ("DataLoader worker (pid 4242) is killed by signal: Killed. ", "SIGKILL"),
        ("DataLoader worker (pid 4242) is killed by signal: Segmentation fault. ", "SIGSEGV"),
        ("DataLoader worker (pid(s) 4242, 4243) exited unexpectedly", None),
    ],
)
def test_torch_reports_of_a_dead_worker(text: str, signal_name: str | None) -> None:
    died = worker_death(RuntimeError(text), epoch=3)
    assert isinstance(died, WorkerDiedError)
    assert (died.pid, died.signal_name, died.epoch) == (4242, signal_name, 3)
    # Not a worker of any loader of this process: named by pid.
    assert died.split is None and "pid 4242" in str(died) and "epoch 3" in str(died)
    assert describe(died) == (str(died), EXIT_FAILED)
    assert worker_death(RuntimeError("CUDA out of memory"), epoch=0) is None


def test_a_dead_worker_message_names_worker_split_signal_and_epoch() -> None:
    died = WorkerDiedError(pid=7, signal_name="SIGKILL", split="val", worker=1, epoch=2)
    assert str(died).startswith(
        "DataLoader worker 1 (pid 7) of the val split was killed by signal SIGKILL in epoch 2"
    )
    assert "\n" not in str(died)


def test_debug_shows_the_traceback(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "jsons").mkdir()
    (tmp_path / "jsons/train.json").write_text("{}")
    assert main(["make-data", "--out", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert main(["--debug", "make-data", "--out", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("adaptive-cache")
