"""Reference TensorBoard event records for ril's writer (crates/rid-trainer/src/tensorboard.rs):
tensorboard's own RecordWriter and Event protos, with fixed wall times, so that the bytes can be
compared. With --check DIR it instead reads a folder of event files (e.g. a `ril train` run's
tb/) with tensorboard's EventAccumulator and prints every scalar series, to show that
TensorBoard reads what ril writes.

    python tools/parity/make_tensorboard_fixture.py            # tensorboard==2.20.0, Python 3.11
    python tools/parity/make_tensorboard_fixture.py --check RUN/tb
Writes crates/rid-trainer/tests/fixtures/tensorboard/events.bin.
"""

import pathlib
import sys

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

if len(sys.argv) == 3 and sys.argv[1] == "--check":
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(sys.argv[2])
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        print(tag, len(events), [(e.step, round(e.value, 6)) for e in events[:3]], "...")
    sys.exit(0)

out = pathlib.Path(__file__).resolve().parents[2] / "crates/rid-trainer/tests/fixtures/tensorboard"
out.mkdir(parents=True, exist_ok=True)
path = out / "events.bin"
with open(path, "wb") as f:
    w = RecordWriter(f)
    w.write(Event(wall_time=1764763200.25, file_version="brain.Event:2").SerializeToString())
    # The same steps and values as the Rust test (the_writer_gives_tensorboards_bytes; its
    # 123_456.79 is this 123456.789 as a float32, 123456.7890625).
    rows = [
        (0, [("aesthetic/loss", -0.5), ("aesthetic/grad_norm", 3.25)]),
        (1, [("aesthetic/loss", -0.625), ("aesthetic/reward_mean", 5.125)]),
        (300, [("hps/loss", 1e-7), ("hps/distill", 123456.789)]),
    ]
    for i, (step, values) in enumerate(rows):
        summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values])
        w.write(Event(wall_time=1764763201.5 + i, step=step, summary=summary).SerializeToString())
print(path, path.stat().st_size, "bytes")
