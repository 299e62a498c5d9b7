"""The batch's base session (relora_worker.base_session): a restored base is a fresh module tree over the loaded
weights, identical to a fresh load under the same RNG state; anything written into the base forces a reload."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from relora_worker.base_session import BaseSession
from relora_worker.modelio import load_base_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(folder, safe_serialization=True)  # no head: each load draws a fresh one
    return folder


def fresh(folder: Path, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A solo run's base (state and the RNG state after the load) under ``seed``."""
    torch.manual_seed(seed)
    model = load_base_model(folder, "seq-cls", 3, 0, CPU)
    return model.state_dict(), torch.get_rng_state()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_restored_base_is_a_fresh_load_and_an_adapters_wrapping_stays_its_own(tiny_base: Path) -> None:
    from peft import LoraConfig, get_peft_model

    expected, rng_after = fresh(tiny_base, 7)
    with contextlib.ExitStack() as stack:
        session = BaseSession(str(tiny_base), stack, keep=True)
        torch.manual_seed(7)
        first = session.model("seq-cls", 3, 0, CPU)
        lora = LoraConfig(r=2, target_modules=["query"], modules_to_save=["classifier"], task_type="SEQ_CLS")
        wrapped = get_peft_model(first, lora)  # wraps ``first`` in place, trains the head copy
        with torch.no_grad():
            wrapped.base_model.model.classifier.modules_to_save["default"].weight.add_(1.0)
        torch.manual_seed(7)
        second = session.model("seq-cls", 3, 0, CPU)
        assert torch.equal(torch.get_rng_state(), rng_after)  # the RNG as the solo load left it
        assert session.model_loads == 1 and session.restores == 1
    assert same(second.state_dict(), expected)
    assert not any("lora_" in name or "modules_to_save" in name for name, _ in second.named_modules())


def test_another_seed_or_a_write_into_the_base_loads_it_again(tiny_base: Path) -> None:
    expected, _ = fresh(tiny_base, 1)
    with contextlib.ExitStack() as stack:
        session = BaseSession(str(tiny_base), stack, keep=True)
        torch.manual_seed(0)
        first = session.model("seq-cls", 3, 0, CPU)
        torch.manual_seed(1)  # another seed: the head a load draws differs, so the copy is not used
        session.model("seq-cls", 3, 0, CPU)
        assert session.model_loads == 2 and session.restores == 0
        torch.manual_seed(1)
        shared = session.model("seq-cls", 3, 0, CPU)
        assert session.restores == 1 and first is not shared
        with torch.no_grad():  # a bug that writes into the frozen base: the fingerprint sees it
            shared.bert.embeddings.word_embeddings.weight.mul_(2.0)
        torch.manual_seed(1)
        again = session.model("seq-cls", 3, 0, CPU)
        assert session.model_loads == 3 and session.restores == 1
    assert same(again.state_dict(), expected)
