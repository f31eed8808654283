"""How many epochs SB and LB of the `keskar` study need to reach its convergence criterion: one seed each.

The study stops every run at the first epoch whose training accuracy (full training split) is at least
``until_train_accuracy``, within a per-network cap ``max_epochs``. This probe trains seed 0 of each network at
both batch sizes with the study's own settings and a generous cap, and prints the epoch each one reached the
criterion (or that it did not), its loss, test accuracy and CPU time, and the per-epoch training accuracy. The
study's caps were chosen from its output (experiments/README.md).

    python experiments/keskar_probe.py [F1] [C1]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keskar import batch_sizes, settings  # noqa: E402

from sharpness import load_dataset  # noqa: E402
from sharpness.reproduce import train_config  # noqa: E402
from sharpness.train import train  # noqa: E402

#: The probe's own caps: well above what the study's caps turned out to need.
CAPS = {"F1": 150, "C1": 300}


def probe(name: str) -> None:
    s = settings("full")
    net = s["networks"][name]
    ds = load_dataset(net["data"], subset=net["subset"], test_subset=net["test_subset"])
    for role, B in batch_sizes(int(ds.x_train.shape[0]), s["sb"], s["lb"]).items():
        t0 = time.process_time()
        cfg = train_config({**s, **net}, batch_size=B, seed=0, until_train_accuracy=s["until_train_accuracy"],
                           max_epochs=CAPS[name])
        result = train(cfg, dataset=ds)
        m = result.metrics
        print(f"{name} {role} B={B}: reached={m['reached_train_accuracy']} after {m['epochs']} epochs, train acc "
              f"{100 * m['train_acc']:.2f} %, train loss {m['train_loss']:.4g}, test acc {100 * m['test_acc']:.2f} %, "
              f"{time.process_time() - t0:.0f} s CPU", flush=True)
        print("  train acc per epoch (%):", " ".join(f"{h['epoch']}:{100 * h['train_acc']:.1f}" for h in result.history[1:]),
              flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in sys.argv[1:] or ["F1", "C1"]:
        probe(name)
