"""The Hugging Face ``Trainer`` bridge: the callback's values in ``trainer.state.log_history`` and in the
TensorBoard event file the Trainer writes, and the gate after ``Trainer.train()``; a tiny GPT-2 built from a
config, a few CPU steps. Skipped only without ``transformers`` / ``tensorboard`` (CI installs both: ``[all]``)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import sharpness  # noqa: E402
from sharpness.errors import GateFailed, InputError  # noqa: E402
from sharpness.integrations.hf_trainer import SharpnessTrainerCallback, gate, report_scalars  # noqa: E402


def tiny_gpt2(dropout=0.0):
    config = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                     bos_token_id=10, eos_token_id=10, resid_pdrop=dropout, embd_pdrop=dropout,
                                     attn_pdrop=dropout)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def token_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 11, (n, 8), generator=g)
    return ids, ids.clone()  # a causal LM's labels are its inputs (the model shifts them)


def trainer_for(model, tmp_path, monkeypatch, steps=4):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    ids, labels = token_data()
    train = [{"input_ids": i, "labels": l} for i, l in zip(ids, labels)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=4, learning_rate=0.05,
        optim="sgd", lr_scheduler_type="constant", logging_steps=100, save_strategy="no", report_to=["tensorboard"],
        use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    return transformers.Trainer(model=model, args=args, train_dataset=train)


def test_the_callbacks_values_reach_the_log_history_and_tensorboard(tmp_path, monkeypatch):
    trainer = trainer_for(tiny_gpt2(), tmp_path, monkeypatch)
    ids, labels = token_data(8, seed=1)
    tracking = SharpnessTrainerCallback.attach(trainer, ids, labels, every=2, loss="causal-lm", top_k=1,
                                               trace=True, trace_matvecs=6, dtype="float64")
    trainer.train()
    records = tracking.tracker.records
    assert [r["step"] for r in records] == [0, 2, 4]  # start, every 2nd step, the end is step 4 already
    assert records[1]["eos_threshold"] == pytest.approx(2 / 0.05)  # SGD read through Accelerate's wrapper
    logged = [e for e in trainer.state.log_history if "sharpness/lambda_max" in e]
    assert [e["step"] for e in logged] == [0, 2, 4]
    assert [e["sharpness/lambda_max"] for e in logged] == [r["lambda_max"] for r in records]
    assert all("sharpness/trace" in e for e in logged)

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    points = events.Scalars("train/sharpness/lambda_max")  # the Trainer's TensorBoard callback adds train/
    assert [p.step for p in points] == [0, 2, 4]
    assert [p.value for p in points] == pytest.approx([r["lambda_max"] for r in records], rel=1e-6)  # float32

    # The tracked value is the Hessian's: the same as an analysis of the final model on the same batch.
    final = sharpness.analyze(trainer.model, ids, labels, loss="causal-lm", dtype="float64", bottom_k=0, trace=False)
    assert records[-1]["lambda_max"] == pytest.approx(final.hessian["top"]["values"][0], rel=1e-4)


def test_training_with_the_callback_is_bit_identical_to_training_without(tmp_path, monkeypatch):
    # With dropout on: the measurements must neither consume the global RNG nor leave the model in eval mode.
    def train(callback_options):
        trainer = trainer_for(tiny_gpt2(dropout=0.1), tmp_path / str(bool(callback_options)), monkeypatch)
        if callback_options:
            SharpnessTrainerCallback.attach(trainer, *token_data(8, seed=1), **callback_options)
        trainer.train()
        return trainer.model

    plain = train({})
    tracked = train(dict(every=1, loss="causal-lm", trace=True, trace_matvecs=6))
    assert tracked.training == plain.training
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), tracked.state_dict().values()))


def test_the_gate_after_train_logs_and_fails_on_a_low_threshold(tmp_path, monkeypatch):
    trainer = trainer_for(tiny_gpt2(), tmp_path, monkeypatch, steps=2)
    trainer.train()
    ids, labels = token_data(8, seed=1)
    batches = [{"input_ids": ids[:4], "labels": labels[:4]}, {"input_ids": ids[4:], "labels": labels[4:]}]
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    options = dict(loss="causal-lm", bottom_k=0, trace=False, dtype="float64")
    passed = gate(trainer, batches, max_eigenvalue=1e9, **options)
    lam = passed.hessian["top"]["values"][0]
    assert trainer.state.log_history[-1]["sharpness/gate/lambda_max"] == lam
    assert trainer.state.log_history[-1]["sharpness/gate/passed"] == 1.0
    with pytest.raises(GateFailed, match="max_eigenvalue"):
        gate(trainer, batches, max_eigenvalue=lam / 2, **options)
    assert trainer.state.log_history[-1]["sharpness/gate/passed"] == 0.0  # logged before it raised
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert not gate(trainer, batches, max_eigenvalue=lam / 2, raise_on_failure=False, log=False, **options).passed


def test_an_unbound_callback_says_how_to_bind_it(tmp_path, monkeypatch):
    ids, labels = token_data(4)
    callback = SharpnessTrainerCallback(ids, labels, every=1, loss="causal-lm")
    trainer = trainer_for(tiny_gpt2(), tmp_path, monkeypatch, steps=1)
    trainer.add_callback(callback)
    with pytest.raises(InputError, match="attach"):
        trainer.train()
    with pytest.raises(InputError, match="inputs/targets"):
        SharpnessTrainerCallback(every=1)


def test_report_scalars_leave_out_what_was_not_measured():
    report = {"hessian": {"top": {"values": [3.0]}, "bottom": None, "trace": {"value": 7.0}},
              "epsilon_sharpness": [], "loss": 0.5, "gate": {"checks": [], "passed": True}}
    assert report_scalars(report) == {"sharpness/lambda_max": 3.0, "sharpness/trace": 7.0, "sharpness/loss": 0.5}
