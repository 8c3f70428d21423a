"""The Region Focus Module in ONNX Runtime: one relevance score per high-resolution token."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .onnx_session import make_session, run_session


class RegionFocus:
    """score(embeds [L, D], hr_mask [L], query_index) -> float32 [L]: for each head a softmax of
    the query token's attention logits over the HR positions, averaged over heads; 0 elsewhere."""

    def __init__(self, bundle, device: str = "auto", threads: int = 0):
        self.hidden_size = bundle.manifest.hidden_size
        self.session, self.provider = make_session(bundle.rfm_path, device, threads)
        self.takes_positions = any(i.name == "position_ids" for i in self.session.get_inputs())
        # An RFM trained with the HR tokens' place in the image (rfm_torch.RFMConfig.image_xy)
        self.takes_image_xy = any(i.name == "image_xy" for i in self.session.get_inputs())

    def score(self, embeds: np.ndarray, hr_mask: np.ndarray, query_index: int,
              cancel=None, positions=None, image_xy=None) -> np.ndarray:
        """cancel (a CancelToken) interrupts the run from another thread: Cancelled. positions:
        int [3, L] M-RoPE positions, required by an RFM of such a family (mrope.py)."""
        embeds = np.asarray(embeds, dtype=np.float32)
        hr_mask = np.asarray(hr_mask, dtype=bool)
        if embeds.ndim != 2 or embeds.shape[1] != self.hidden_size:
            raise InputError(f"RFM input must be [L, {self.hidden_size}], got {embeds.shape}.")
        length = embeds.shape[0]
        if hr_mask.shape != (length,):
            raise InputError(f"hr_mask must be [{length}], got {hr_mask.shape}.")
        if not hr_mask.any():
            raise InputError("hr_mask selects no token: nothing to score.")
        if not 0 <= int(query_index) < length:
            raise InputError(f"query_index {query_index} is outside the sequence of {length}.")
        feeds = {"inputs_embeds": np.ascontiguousarray(embeds[None]), "hr_mask": hr_mask,
                 "query_index": np.asarray(int(query_index), dtype=np.int64)}
        if self.takes_positions:
            if positions is None or np.shape(positions) != (3, length):
                raise InputError(f"This RFM takes M-RoPE positions [3, {length}], got "
                                 f"{None if positions is None else np.shape(positions)}.")
            feeds["position_ids"] = np.ascontiguousarray(positions, dtype=np.int64)
        if self.takes_image_xy:
            if image_xy is None or np.shape(image_xy) != (length, 2):
                raise InputError(f"This RFM takes the tokens' image positions [{length}, 2], got "
                                 f"{None if image_xy is None else np.shape(image_xy)}.")
            feeds["image_xy"] = np.ascontiguousarray(image_xy, dtype=np.float32)
        return run_session(self.session, ["scores"], feeds, cancel)[0].astype(np.float32, copy=False)
