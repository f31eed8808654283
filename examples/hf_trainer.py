"""A Hugging Face `Trainer` fine-tune with the sharpness callback and a final gate.

    pip install sharpness[hf,tensorboard]
    python examples/hf_trainer.py [--steps 12] [--every 4] [--max-eigenvalue 1e3] [--out runs/hf]

A tiny GPT-2 built from a config (no download) trains on random token sequences. `SharpnessTrainerCallback`
measures λ_max and the Hessian trace of the causal-LM loss every `--every` steps on a fixed analysis set and logs
them through `Trainer.log`: they appear in `trainer.state.log_history` and in the TensorBoard event file the
Trainer writes under `--out/runs/` (`train/sharpness/lambda_max`). After `trainer.train()`, `gate` runs `sharpness.analyze` on the trained
model with `--max-eigenvalue` and exits 3 when it fails, as `sharpness analyze --max-eigenvalue` does. The
model is saved with `save_pretrained`, so `sharpness analyze OUT/model --data ...` can check it again. CPU, seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile

import torch
import transformers

from sharpness.errors import GateFailed
from sharpness.integrations.hf_trainer import SharpnessTrainerCallback, gate


def tokens(n: int, seed: int) -> torch.Tensor:
    """`n` sequences of 8 tokens from a vocabulary of 11 with a learnable rule (each token is the last + 1)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 11, (n, 1), generator=g)
    return (start + torch.arange(8)) % 11


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--max-eigenvalue", type=float, default=1e3)
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp()

    config = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=10, eos_token_id=10, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    train = [{"input_ids": t, "labels": t} for t in tokens(64, seed=0)]
    report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    training = transformers.TrainingArguments(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=8, learning_rate=1e-2,
        logging_steps=args.every, save_strategy="no", report_to=report_to, use_cpu=True, disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=training, train_dataset=train)

    analysis = tokens(16, seed=1)  # a fixed analysis set, apart from the training data
    tracking = SharpnessTrainerCallback.attach(trainer, analysis, analysis.clone(), every=args.every,
                                               loss="causal-lm", trace=True)
    trainer.train()
    for r in tracking.tracker.records:
        print(f"step {r['step']:>3}: λ_max {r['lambda_max']:.4g}, trace {r['trace']:.4g}, loss {r['loss']:.4f}")
    trainer.save_model(os.path.join(out, "model"))

    batches = [{"input_ids": analysis[i:i + 8], "labels": analysis[i:i + 8]} for i in (0, 8)]
    try:
        report = gate(trainer, batches, loss="causal-lm", max_eigenvalue=args.max_eigenvalue, bottom_k=0,
                      trace=False)
    except GateFailed as failed:
        print(f"gate FAILED: {failed}", file=sys.stderr)
        sys.exit(3)
    print(f"gate passed: λ_max {report.hessian['top']['values'][0]:.4g} ≤ {args.max_eigenvalue:g}")
    return {"records": tracking.tracker.records, "report": report.to_dict(), "out": out,
            "log_history": trainer.state.log_history}


if __name__ == "__main__":
    main()
