"""Cancel that interrupts (issue 18): an ONNX Runtime run stopped from another thread through its
RunOptions.terminate, the LLM prefill stopped between chunks, and the models still usable after."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rs_vqa_plugin.engine.errors import Cancelled
from rs_vqa_plugin.engine.progress import CancelToken

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    from rs_vqa_plugin.engine.bundle import load_bundle

    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def llm(bundle):
    from rs_vqa_plugin.engine.llm import LanguageModel

    return LanguageModel(bundle, device="cpu")


def _rfm_inputs(length: int, hidden: int):
    rng = np.random.default_rng(length)
    embeds = rng.normal(scale=0.5, size=(length, hidden)).astype(np.float32)
    hr = np.zeros(length, dtype=bool)
    hr[10:length - 10] = True
    return embeds, hr, length - 1


def test_cancel_callbacks_run_once_registered_and_not_after():
    token, calls = CancelToken(), []
    with token.on_cancel(lambda: calls.append("inside")):
        pass
    token.cancel()
    assert calls == []                           # unregistered when the block ended
    with token.on_cancel(lambda: calls.append("late")):
        assert calls == ["late"]                 # already cancelled: called at once
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


def test_onnx_run_is_terminated_from_another_thread_and_the_session_survives(bundle):
    from rs_vqa_plugin.engine.rfm import RegionFocus

    rfm = RegionFocus(bundle, device="cpu", threads=1)
    small = _rfm_inputs(64, rfm.hidden_size)
    reference = rfm.score(*small)
    # A sequence long enough that one uncancelled run takes a good fraction of a second here.
    length, seconds = 2000, 0.0
    while seconds < 0.5 and length < 64000:
        length *= 2
        big = _rfm_inputs(length, rfm.hidden_size)
        t = time.perf_counter()
        rfm.score(*big)
        seconds = time.perf_counter() - t
    token = CancelToken()
    timer = threading.Timer(seconds * 0.2, token.cancel)
    timer.start()
    t = time.perf_counter()
    # Nothing in score() polls the token after the run starts: only ORT's terminate flag,
    # set by the cancelling thread, can end the run with Cancelled.
    with pytest.raises(Cancelled):
        rfm.score(*big, cancel=token)
    elapsed = time.perf_counter() - t
    timer.join()
    assert elapsed < seconds                     # it did not run to the end
    # The same session answers the next run, and answers it the same.
    assert np.array_equal(rfm.score(*small, cancel=CancelToken()), reference)


def test_vision_encoder_refuses_to_start_when_cancelled(bundle):
    from rs_vqa_plugin.engine.vision import VisionEncoder

    vision = VisionEncoder(bundle, device="cpu")
    size = bundle.manifest.tile_size
    tiles = np.zeros((2, size, size, 3), dtype=np.uint8)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        vision.encode_tiles(tiles, cancel=token)
    assert vision.encode_tiles(tiles).shape[0] == 2


def test_chunked_prefill_equals_one_pass(llm, monkeypatch):
    import torch

    rng = np.random.default_rng(7)
    embeds = rng.normal(scale=0.3, size=(300, llm.hidden_size)).astype(np.float32)
    x = torch.from_numpy(embeds)[None]
    with torch.no_grad():
        one = llm.model(inputs_embeds=x).logits[0, -1]
        for chunk in (1000, 64, 37, 16):
            logits, cache = llm.prefill(x, chunk=chunk)
            assert torch.allclose(logits[0, -1], one, atol=1e-5, rtol=1e-4), chunk
            assert cache.get_seq_length() == 300
    # And the answer decoded after a chunked prefill is the one-pass answer.
    whole = llm.generate(embeds, max_new_tokens=6)
    monkeypatch.setattr(llm, "prefill_chunk", lambda: 23)
    assert llm.generate(embeds, max_new_tokens=6) == whole


def test_prefill_is_chunked_only_where_attention_is_eager(llm, monkeypatch):
    assert llm.model.config._attn_implementation == "sdpa" and llm.prefill_chunk() == 0
    monkeypatch.setattr(llm.model.config, "_attn_implementation", "eager")
    assert llm.prefill_chunk() == llm.PREFILL_CHUNK


def test_prefill_stops_between_chunks(llm, monkeypatch):
    token, forwards = CancelToken(), []

    def count(_module, _args):
        forwards.append(1)
        if len(forwards) == 2:
            token.cancel()      # as if the user cancelled during the second chunk

    embeds = np.random.default_rng(8).normal(size=(40 * 16, llm.hidden_size)).astype(np.float32)
    monkeypatch.setattr(llm, "prefill_chunk", lambda: 16)
    handle = llm.model.register_forward_pre_hook(count)
    try:
        with pytest.raises(Cancelled):
            llm.generate(embeds, max_new_tokens=4, cancel=token)
    finally:
        handle.remove()
    assert len(forwards) == 2                    # 38 chunks never ran
    assert isinstance(llm.generate(embeds[:20], max_new_tokens=2, cancel=CancelToken()), str)


def test_prefill_stops_between_decoder_layers(llm):
    """One pass is cut short too: each decoder layer checks the token before it runs."""
    token, ran = CancelToken(), []
    layers = llm.model.model.layers
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i, layer in enumerate(layers)]
    handles.append(layers[0].register_forward_hook(lambda m, a, o: token.cancel()))
    embeds = np.random.default_rng(9).normal(size=(64, llm.hidden_size)).astype(np.float32)
    try:
        with pytest.raises(Cancelled):
            llm.generate(embeds, max_new_tokens=2, cancel=token)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0] and len(layers) > 1
    # The checks are gone afterwards: a cancelled token no longer matters without cancel=.
    assert isinstance(llm.generate(embeds, max_new_tokens=2), str)
