"""``sharpness analyze DIR`` on a Hugging Face ``save_pretrained`` directory (config.json + model.safetensors).

The model is a tiny GPT-2 built from a config (no download, ever); skipped only without ``transformers``
(the ``[hf]`` extra, which CI installs).
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cli_helpers import assert_input_error, run_cli
from import_helpers import hide

transformers = pytest.importorskip("transformers")

import sharpness  # noqa: E402
from sharpness.integrations.pretrained import load_pretrained  # noqa: E402

DATA = textwrap.dedent('''
    import torch

    def batches(split="train"):
        g = torch.Generator().manual_seed(1 if split == "test" else 0)
        ids = torch.randint(0, 11, (6, 8), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 5:] = 0                                  # right padding: those tokens do not count
        labels = ids.masked_fill(mask == 0, -100)
        return [{"input_ids": ids[i:i + 3], "attention_mask": mask[i:i + 3], "labels": labels[i:i + 3]}
                for i in (0, 3)]
''')


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=2, n_head=2,
                                     bos_token_id=10, eos_token_id=10, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    model = tiny_gpt2()
    model.save_pretrained(root / "gpt2")
    (root / "data.py").write_text(DATA)
    return root, model


def library_batches(root):
    namespace: dict = {}
    exec((root / "data.py").read_text(), namespace)
    return namespace["batches"]()


def test_analyze_a_save_pretrained_directory_equals_the_library_call(capsys, saved, tmp_path, monkeypatch):
    root, model = saved
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "report.json"
    code, stdout, err = run_cli(capsys, "analyze", root / "gpt2", "--data", f"{root / 'data.py'}:batches",
                                "--loss", "causal-lm", "--dtype", "float64", "--no-trace", "--bottom-k", "0",
                                "--threads", "1", "--json", out)
    assert code == 0, err
    assert "[GPT2LMHeadModel (gpt2), config sha256 " in stdout  # the table's first line names what was loaded
    report = json.loads(out.read_text())
    want = sharpness.analyze(model, library_batches(root), loss="causal-lm", dtype="float64", trace=False,
                             bottom_k=0).to_dict()
    # Same weights (safetensors is bit-exact), batches and seed: the same Lanczos run, up to float64 rounding.
    assert report["hessian"]["top"]["values"][0] == pytest.approx(want["hessian"]["top"]["values"][0], rel=1e-10)
    assert report["loss"] == pytest.approx(want["loss"], rel=1e-12)
    config_bytes = (root / "gpt2" / "config.json").read_bytes()
    block = report["checkpoint"]
    assert block["kind"] == "save_pretrained" and block["architecture"] == "GPT2LMHeadModel"
    assert block["config_sha256"] == hashlib.sha256(config_bytes).hexdigest()
    assert block["model_type"] == "gpt2" and block["weights"] == ["model.safetensors"]
    assert "HF_HUB_OFFLINE" not in os.environ  # the Hub was switched off only while loading


def test_auto_loss_on_a_causal_lm_directory_is_causal_lm(capsys, saved, tmp_path):
    root, _ = saved
    common = ("analyze", root / "gpt2", "--data", f"{root / 'data.py'}:batches", "--no-trace", "--bottom-k", "0",
              "--top-k", "1", "--max-steps", "3", "--threads", "1", "--json", "-")
    auto = json.loads(run_cli(capsys, *common)[1])
    causal = json.loads(run_cli(capsys, *common, "--loss", "causal-lm")[1])
    plain = json.loads(run_cli(capsys, *common, "--loss", "cross-entropy")[1])
    assert auto["loss"] == causal["loss"] != plain["loss"]  # unshifted cross-entropy is another objective
    # As a pipeline gate: exit 3 with the report still written when λ_max is above the threshold.
    code, out, _ = run_cli(capsys, *common, "--max-eigenvalue", "1e-6")
    assert code == 3 and json.loads(out)["gate"]["passed"] is False


def test_the_loaded_model_is_the_saved_one(saved):
    root, model = saved
    loaded, info = load_pretrained(root / "gpt2")
    assert not loaded.training and info["architecture"] == "GPT2LMHeadModel"
    mine = dict(model.named_parameters())
    assert all(torch.equal(p, mine[k]) for k, p in loaded.named_parameters())


def test_bad_directories_are_one_line_errors(capsys, saved, tmp_path):
    root, _ = saved
    data = f"{root / 'data.py'}:batches"
    assert_input_error(run_cli(capsys, "analyze", tmp_path, "--data", data), "config.json", "directory")
    assert_input_error(run_cli(capsys, "analyze", root / "gpt2"), "--data FILE.py:FN", "no --data")
    assert_input_error(run_cli(capsys, "analyze", root / "gpt2", "--data", data, "--model", "mlp"), "no --model")

    def copy_with(name, config=None, weights=True):
        d = tmp_path / name
        d.mkdir()
        text = (root / "gpt2" / "config.json").read_text()
        (d / "config.json").write_text(text if config is None else config(json.loads(text)))
        if weights:
            (d / "model.safetensors").write_bytes((root / "gpt2" / "model.safetensors").read_bytes())
        return d

    no_weights = copy_with("noweights", weights=False)
    (no_weights / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    assert_input_error(run_cli(capsys, "analyze", no_weights, "--data", data), "model.safetensors", "pickled")
    custom = copy_with("custom", lambda c: json.dumps({**c, "architectures": ["MyOwnLM"]}))
    assert_input_error(run_cli(capsys, "analyze", custom, "--data", data), "MyOwnLM", "never run")
    unnamed = copy_with("unnamed", lambda c: json.dumps({k: v for k, v in c.items() if k != "architectures"}))
    assert_input_error(run_cli(capsys, "analyze", unnamed, "--data", data), "architecture", "None")
    broken = copy_with("broken", lambda c: "{not json")
    assert_input_error(run_cli(capsys, "analyze", broken, "--data", data), "JSON")
    corrupt = copy_with("corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    assert_input_error(run_cli(capsys, "analyze", corrupt, "--data", data), "GPT2LMHeadModel")


def test_without_transformers_the_directory_is_a_one_line_error(capsys, saved, monkeypatch):
    root, _ = saved
    hide(monkeypatch, "transformers")
    assert_input_error(run_cli(capsys, "analyze", root / "gpt2", "--data", f"{root / 'data.py'}:batches"),
                       "pip install sharpness[hf]")


def test_the_hub_is_offline_when_transformers_is_first_imported_by_the_loader(saved):
    root, _ = saved
    code = ("import os, sys; from sharpness.integrations.pretrained import load_pretrained; "
            f"load_pretrained({str(root / 'gpt2')!r}); import huggingface_hub.constants as c; "
            "print(c.HF_HUB_OFFLINE, 'HF_HUB_OFFLINE' in os.environ)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]  # offline for the process's Hub client, environment restored


def test_info_on_a_directory_reads_config_and_safetensors_headers(capsys, saved, tmp_path):
    root, model = saved
    code, out, err = run_cli(capsys, "info", root / "gpt2", "--json", "-")
    assert code == 0, err
    d = json.loads(out)
    assert d["architecture"] == "GPT2LMHeadModel" and d["model_type"] == "gpt2"
    assert d["config_sha256"] == hashlib.sha256((root / "gpt2" / "config.json").read_bytes()).hexdigest()
    # Tied embeddings are stored once, as model.parameters() counts them once.
    assert d["stored_values"] == sum(p.numel() for p in model.parameters())
    assert d["weights"][0]["dtypes"] == ["F32"]
    assert "architecture: GPT2LMHeadModel" in run_cli(capsys, "info", root / "gpt2")[1]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    assert_input_error(run_cli(capsys, "info", bad), "safetensors", "header length")
