"""Within-epoch progress of `leoclr train`: a bar redrawn on a terminal, periodic lines in a log,
and the loop calling the hook after every step."""

from __future__ import annotations

import io

from trainables.progress import EpochProgress, format_eta


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_one_bar_redrawn_and_erased_at_the_end_of_the_epoch():
    out, clock = io.StringIO(), Clock()
    hook = EpochProgress(64, out, tty=True, clock=clock, width=10)
    for step in (0, 1, 2, 3, 4):
        clock.now += 0.5
        hook(3, step, 4)
    frames = out.getvalue().split("\r")
    assert "\n" not in out.getvalue()
    assert frames[2].startswith("epoch 3 [#####.....] 2/4 steps")
    assert "1/4 steps  128 img/s  ETA 0:02" in frames[1]  # 64 images in 0.5 s, 3 steps of 0.5 s left
    assert frames[-2].strip() == "" and frames[-1] == ""  # erased: the epoch's result line follows


def test_a_log_gets_a_line_every_tenth_of_the_epoch_or_every_30_seconds():
    out, clock = io.StringIO(), Clock()
    hook = EpochProgress(10, out, tty=False, clock=clock)
    for step in range(0, 101):
        clock.now += 0.1
        hook(1, step, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 9 and lines[0].startswith("  epoch 1: 10/100 steps  100 img/s")  # not at 100 %
    out2, clock2 = io.StringIO(), Clock()
    slow = EpochProgress(10, out2, tty=False, clock=clock2)
    for step in range(0, 6):
        clock2.now += 31.0
        slow(1, step, 1000)  # 0.5 % each: a line every 30 s anyway
    assert len(out2.getvalue().splitlines()) == 5
    assert format_eta(3725) == "1:02:05" and format_eta(65) == "1:05"


def test_the_loop_calls_the_hook_after_every_step_and_reports_the_split_sizes():
    from trainables.config import TrainConfig
    from trainables.loop import Trainer

    cfg = TrainConfig.from_dict(dict(dataset="digits", image_size=16, backbone="small_cnn", batch_size=32,
                                     queue_size=64, epochs=2, knn_k=10, bn_splits=2, max_steps_per_epoch=2,
                                     device="cpu"))
    calls, reports = [], []
    Trainer(cfg).fit(lambda m, c: reports.append(m), progress=lambda *a: calls.append(a))
    assert calls == [(1, 0, 2), (1, 1, 2), (1, 2, 2), (2, 0, 2), (2, 1, 2), (2, 2, 2)]
    assert reports[0]["data_pretrain_images"] > 0 and reports[0]["data_val_images"] > 0
    assert "data_pretrain_images" not in reports[1]
