"""Progress during an epoch: a bar on a terminal, plain lines in a file (nohup, CI, info.log)."""

import io
import logging
import re

import torch

from conftest import Terminal, run_cli
from trainer.progress import Progress, clock


def run(progress, batches=4):
    for _ in range(batches):
        progress.update(8, torch.tensor(2.0))
    progress.close()


def test_a_file_gets_plain_lines_with_speed_loss_and_time_left(caplog):
    logger = logging.getLogger("trainer")
    caplog.set_level(logging.INFO, logger="trainer")
    progress = Progress(
        4, "epoch 3/10", epochs_after=7, epoch_seconds=60.0, logger=logger, every=0.0, stream=io.StringIO()
    )
    run(progress)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # after batches 1-3: the epoch's last batch is followed by its log
    pattern = r"epoch 3/10: batch (\d)/4, [\d,]+ img/s, loss 2\.0000, left: epoch \d+:\d\d, run (\d+):(\d\d)"
    found = [re.fullmatch(pattern, line) for line in lines]
    assert all(found), lines
    minutes, seconds = map(int, found[-1].groups()[1:])
    assert 7 * 60 <= minutes * 60 + seconds <= 7 * 60 + 5  # 7 more epochs of 60 s, and this one's last batch


def test_a_terminal_gets_a_bar_and_no_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="trainer")
    screen = Terminal()
    run(Progress(4, "epoch 1/2", logger=logging.getLogger("trainer"), every=0.0, stream=screen))
    assert "epoch 1/2" in screen.getvalue() and "img/s, loss 2.0000" in screen.getvalue()
    assert not caplog.records


def test_nothing_without_a_terminal_or_a_logger():
    stream = io.StringIO()
    run(Progress(4, "epoch 1/2", stream=stream))
    assert stream.getvalue() == ""
    assert clock(59.6) == "1:00" and clock(3725) == "1:02:05"


def test_predict_and_test_show_bars_on_a_terminal_only(finished_run, tiny_folder, tmp_path):
    checkpoint = finished_run[0] / "last.pth"
    for terminal in (False, True):
        predict = run_cli("predict.py", "--resume", checkpoint, tiny_folder / "test", terminal=terminal)
        test = run_cli(
            "test.py",
            "--resume",
            checkpoint,
            "--data_dir",
            tiny_folder,
            "--out",
            tmp_path / str(terminal),
            terminal=terminal,
        )
        assert predict.returncode == test.returncode == 0, predict.stderr + test.stderr
        for bar, proc in (("read and predict", predict), ("test", test)):
            assert (f"{bar}: " in proc.stderr) == terminal, proc.stderr


def test_a_ctrl_c_mid_epoch_closes_the_bar_so_the_next_line_starts_clean():
    import pytest
    import torch

    from trainer.loops import train_one_epoch
    from trainer.progress import Progress

    class Batches:  # a loader whose second batch never comes: Ctrl-C
        def __len__(self):
            return 3

        def __iter__(self):
            yield torch.randn(2, 4), torch.tensor([0, 1])
            raise KeyboardInterrupt

    screen = Terminal()
    progress = Progress(3, "epoch 1/1", stream=screen)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyboardInterrupt):
        train_one_epoch(
            model, torch.nn.CrossEntropyLoss(), [], optimizer, Batches(), torch.device("cpu"), progress=progress
        )
    assert progress.bar.disable  # closed: tqdm cleared its line before the message that follows


def test_the_lr_range_test_says_where_it_is_in_a_log_file():
    """lr_find.py was silent for minutes when its output went to a file: it now logs a progress line
    (here every 0 s) as training does."""
    import logging

    import torch

    from trainer.lr_finder import lr_range_test
    from trainer.progress import Progress

    lines = []

    class Recorder(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("lr_find_test")
    logger.addHandler(Recorder())
    logger.setLevel(logging.INFO)
    model = torch.nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 3
    progress = Progress(6, "LR range test", logger=logger, every=0.0, stream=io.StringIO())
    lr_range_test(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), batches,
                  torch.device("cpu"), num_steps=6, end_lr=0.01, progress=progress)  # fmt: skip
    assert any(line.startswith("LR range test: batch 1/6, ") for line in lines), lines
