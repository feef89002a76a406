"""transformers builds a model under process-wide patches (weight tying switched off, the default dtype set) that
are not thread-safe. In the app a training thread loads a model while event threads build skeletons for
parameter counts, attach adapters for chat or load another base. Without curlora.models.build_lock around every build
this test fails within a few loads: a tied output head is left on the meta device for good (found by the
8-session test, after which a later test's stories260K logits were garbage)."""

import threading

import pytest
import torch
from peft import LoraConfig

from curlora.methods import adapters
from curlora.models.loading import empty_model, load_model
from tiny_models import save_tiny_llama_dir


def test_builds_in_other_threads_never_see_each_others_patches(tmp_path):
    folder = save_tiny_llama_dir(tmp_path / "model", tied=True)
    base, _, _ = load_model(str(folder), device="cpu")
    config = base.config
    stop = threading.Event()
    errors = []

    def keep_loading():
        try:
            while not stop.is_set():
                load_model(str(folder), device="cpu")
                empty_model(config)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=keep_loading) for _ in range(2)]
    for t in threads:
        t.start()
    bad = 0
    try:
        for _ in range(60):
            adapted = adapters.attach(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
            bs = [p for n, p in adapted.named_parameters() if "lora_B" in n]
            a_s = [p for n, p in adapted.named_parameters() if "lora_A" in n]
            bad += any(bool(b.abs().sum() != 0) for b in bs) or any(bool(a.abs().sum() == 0) for a in a_s)
            adapters.detach(adapted)
            model, _, _ = load_model(str(folder), device="cpu")
            bad += not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight) if \
                model.config.tie_word_embeddings else not torch.isfinite(model.lm_head.weight).all()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert bad == 0
