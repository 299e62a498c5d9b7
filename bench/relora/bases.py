"""Base models v1 and v2 of both scenarios, built inside the benchmark run.

* Encoder: v1 = all-MiniLM-L6-v2 (or a tiny config-built BERT for the CPU smoke test); v2 = v1 after
  continued contrastive pre-training on the PyPI summaries: two random word crops (50–100 % of the words) of
  the same line, each seen with dropout, are positives, the other lines of the batch negatives (in-batch
  InfoNCE, mean pooling, temperature 0.05). Plain SimCSE (identical text, dropout only) is too easy for a
  model that was already trained contrastively: its loss is ~0 and Adam then random-walks the weights. It is
  done as the paper does it: a LoRA of rank 64 on every query/key/value/dense matrix, learning rate 2e-4
  (the paper's), merged into the weights.
* Causal LM: a small Llama-style model pre-trained from scratch (next-token prediction) on the npm summaries
  (v1), then continued, full-parameter, on the PyPI summaries (v2).

Both are saved as float32 safetensors Hugging Face folders with their tokenizer.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.relora.common import NPM, PYPI, Profile, read_corpus, read_debian, train_bpe_tokenizer

Log = Callable[[str], None]
ENCODER_TARGETS = ["query", "key", "value", "dense"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    model = model.to(torch.float32)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


# ------------------------------------------------------------------------------------------------- encoder


def _load_v1_encoder(profile: Profile, model_dir: Path | None, work: Path):  # -> (model, tokenizer, source)
    from transformers import AutoTokenizer, BertConfig, BertModel

    if profile.tiny_models:
        texts = read_corpus(PYPI, profile.corpus_lines) + [r["text"] for r in read_debian()[:2000]]
        tokenizer = train_bpe_tokenizer(texts, 2000, "bert", work / "tokenizer-bert")
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=96, max_position_embeddings=160, pad_token_id=tokenizer.pad_token_id)
        return BertModel(config, add_pooling_layer=True), tokenizer, "tiny BertModel from a config (CPU smoke test)"
    assert model_dir is not None
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir), use_safetensors=True, dtype=torch.float32)
    return model.float(), tokenizer, f"all-MiniLM-L6-v2 from {model_dir}"


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def simcse_release(model: Any, tokenizer: Any, lines: list[str], profile: Profile, device: torch.device,
                   log: Log, seed: int = 0, kind: str = "lora") -> dict:
    """Continued contrastive pre-training: ``lora`` — a rank-64 LoRA on every linear matrix, merged afterwards;
    ``full`` — every parameter trained (issue 17's other kind of update), at lr 2e-5 (the usual full fine-tuning
    rate of sentence encoders; 2e-4 is for the low-rank update)."""
    from peft import LoraConfig, get_peft_model

    rank = 8 if profile.tiny_models else 64
    if kind == "full":
        peft_model = model
        for param in peft_model.parameters():
            param.requires_grad_(True)
    else:
        peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=ENCODER_TARGETS,
                                                      lora_dropout=0.0))
    peft_model.to(device).train()
    rng = random.Random(seed)

    def crop(line: str) -> str:
        words = line.split()
        keep = max(1, round(len(words) * rng.uniform(0.5, 1.0)))
        start = rng.randrange(0, len(words) - keep + 1)
        return " ".join(words[start : start + keep])

    views = []
    for _ in range(2):
        encoded = tokenizer([crop(line) for line in lines], truncation=True, max_length=48, padding="max_length",
                            return_tensors="pt")
        views.append((encoded["input_ids"].to(device), encoded["attention_mask"].to(device)))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    lr = 2e-5 if kind == "full" else 2e-4
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    started, losses, step = time.perf_counter(), [], 0
    warmup = max(1, profile.release_steps // 20)
    while step < profile.release_steps and time.perf_counter() - started < profile.release_seconds:
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        rows = torch.randint(0, len(lines), (profile.release_batch,), generator=generator).to(device)
        width = int(max(m[rows].sum(1).max() for _, m in views))
        batch_ids = torch.cat([ids[rows][:, :width] for ids, _ in views])
        batch_mask = torch.cat([m[rows][:, :width] for _, m in views])
        with _autocast(device):
            both = peft_model(input_ids=batch_ids, attention_mask=batch_mask).last_hidden_state
        pooled = F.normalize(_mean_pool(both.float(), batch_mask), dim=-1)
        first, second = pooled.chunk(2)
        logits = first @ second.T / 0.05
        loss = F.cross_entropy(logits, torch.arange(logits.shape[0], device=device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        if step % 100 == 0 or step == 1:
            losses.append((step, float(loss.detach())))
    _sync(device)
    seconds = time.perf_counter() - started
    what = "full-parameter" if kind == "full" else f"LoRA r={rank} merged"
    log(f"  release (contrastive, {what}): {step} steps in {seconds:.1f} s, loss {losses[0][1]:.3f}"
        f" -> {float(loss.detach()):.3f}")
    merged = peft_model if kind == "full" else peft_model.merge_and_unload()
    return {"model": merged, "steps": step, "seconds": seconds, "loss_trace": losses,
            "lora_rank": None if kind == "full" else rank,
            "lr": lr, "batch": profile.release_batch,
            "method": "contrastive (two word crops + dropout, in-batch InfoNCE), "
                      + ("full-parameter, lr 2e-5" if kind == "full" else "LoRA r=64 merged"),
            "targets": ENCODER_TARGETS}


@torch.no_grad()
def embedding_drift(v1: Any, v2: Any, tokenizer: Any, texts: list[str], device: torch.device) -> float:
    """Mean cosine between v1's and v2's mean-pooled embeddings of ``texts`` (1 = unchanged)."""
    encoded = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt").to(device)
    outs = []
    for model in (v1, v2):
        model.to(device).eval()
        outs.append(F.normalize(_mean_pool(model(**encoded).last_hidden_state.float(), encoded["attention_mask"]),
                                dim=-1))
    return float((outs[0] * outs[1]).sum(-1).mean())


def build_encoder_bases(profile: Profile, work: Path, model_dir: Path | None, device: torch.device,
                        log: Log, update_source: Path = PYPI, kind: str = "lora") -> dict:
    """v1 = MiniLM (or a tiny BERT); v2 = v1 after the contrastive release on ``update_source``'s lines."""
    import copy

    v1, tokenizer, source = _load_v1_encoder(profile, model_dir, work)
    v1_dir, v2_dir = work / "base_v1", work / "base_v2"
    _save(v1, tokenizer, v1_dir)
    lines = read_corpus(update_source, profile.corpus_lines)
    release = simcse_release(copy.deepcopy(v1), tokenizer, lines, profile, device, log, kind=kind)
    v2 = release.pop("model")
    _save(v2, tokenizer, v2_dir)
    probe = [r["text"] for r in read_debian()[:512]]
    drift = embedding_drift(v1, v2, tokenizer, probe, device)
    log(f"  v1 -> v2 embedding cosine on 512 Debian descriptions: {drift:.3f}")
    params = sum(p.numel() for p in v1.parameters())
    return {"v1": str(v1_dir), "v2": str(v2_dir), "v1_source": source, "parameters": params,
            "release": {**release, "update_source": update_source.name, "lines": len(lines)}, "v1_v2_cosine": drift,
            "targets": ENCODER_TARGETS}


# ----------------------------------------------------------------------------------------------- causal LM


def _blocks(tokenizer: Any, lines: list[str], block: int) -> torch.Tensor:
    ids: list[int] = []
    for row in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        ids.extend([tokenizer.bos_token_id, *row, tokenizer.eos_token_id])
    usable = len(ids) // block * block
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, block)


def _lm_train(model: Any, blocks: torch.Tensor, steps: int, seconds_cap: float, batch: int, lr: float,
              device: torch.device, seed: int, log: Log, what: str) -> dict:
    model.to(device).train()
    blocks = blocks.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    warmup = max(1, steps // 20)
    started, step, first = time.perf_counter(), 0, None
    loss = torch.zeros(())
    while step < steps and time.perf_counter() - started < seconds_cap:
        progress = step / max(steps, 1)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimiser.param_groups:
            group["lr"] = lr * scale
        rows = torch.randint(0, blocks.shape[0], (batch,), generator=generator).to(device)
        batch_ids = blocks[rows]
        with _autocast(device):
            logits = model(input_ids=batch_ids).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch_ids[:, 1:].reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        step += 1
        if first is None:
            first = float(loss.detach())
    _sync(device)
    seconds = time.perf_counter() - started
    log(f"  {what}: {step} steps in {seconds:.1f} s, loss {first:.3f} -> {float(loss):.3f}")
    return {"steps": step, "seconds": seconds, "first_loss": first, "last_loss": float(loss), "lr": lr,
            "batch": batch, "block": int(blocks.shape[1]), "tokens_seen": step * batch * int(blocks.shape[1])}


def build_causal_bases(profile: Profile, work: Path, device: torch.device, log: Log) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    lines = profile.extra.get("lm_corpus_lines", profile.corpus_lines)
    npm, pypi = read_corpus(NPM, lines), read_corpus(PYPI, lines)
    started = time.perf_counter()
    tokenizer = train_bpe_tokenizer(npm + pypi, 1000 if profile.tiny_models else 8192, "llama",
                                    work / "tokenizer-llama")
    log(f"  BPE tokenizer ({len(tokenizer)} tokens) trained on npm+PyPI in {time.perf_counter() - started:.1f} s")
    tiny = profile.tiny_models
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=48 if tiny else 384, num_hidden_layers=2 if tiny else 6,
        num_attention_heads=4 if tiny else 6, num_key_value_heads=4 if tiny else 6,
        intermediate_size=96 if tiny else 1024, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    v1_train = _lm_train(model, _blocks(tokenizer, npm, profile.lm_block), profile.lm_pretrain_steps,
                         profile.lm_pretrain_seconds, profile.lm_batch, 1e-3, device, 0, log,
                         "v1 pre-training on npm summaries")
    v1_dir, v2_dir = work / "lm_v1", work / "lm_v2"
    _save(model, tokenizer, v1_dir)
    model.to(device)
    v2_train = _lm_train(model, _blocks(tokenizer, pypi, profile.lm_block), profile.lm_release_steps,
                         profile.lm_release_seconds, profile.lm_batch, 5e-4, device, 1, log,
                         "v2 continued pre-training (full-parameter) on PyPI summaries")
    _save(model, tokenizer, v2_dir)
    return {"v1": str(v1_dir), "v2": str(v2_dir), "parameters": params, "config": config.to_dict(),
            "v1_pretraining": {**v1_train, "corpus": NPM.name}, "release": {**v2_train, "update_source": PYPI.name,
                                                                            "method": "full-parameter next-token"},
            "targets": LLAMA_TARGETS}
