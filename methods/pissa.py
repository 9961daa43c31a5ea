"""PiSSA (Meng et al., 2024) through PEFT: LoRA whose A, B start from the top-r singular triplets
of W0, with the residual W0 - s B A frozen in its place.

Trainable parameters: as LoRA. The outputs at step 0 equal the base model's (up to rounding),
but the frozen base weights are the residual, so the export converts the trained adapter back to
a plain LoRA (of rank 2r) that applies to the original base model.
`svd_niter`: iterations of PEFT's fast randomised SVD; null runs the full SVD.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.api import bounded, runtime
from methods.lora import LoRA


@dataclass(kw_only=True)
class PiSSA(LoRA):
    update_is_product = False  # W0 is replaced by its residual W0 - B0 A0
    alpha: float = 16.0  # alpha = r (scale 1), as in the PiSSA paper
    dropout: float = 0.0  # the principal components are the adapter; PiSSA trains them undropped
    svd_niter: Optional[int] = bounded(1, default=16)  # null: the full SVD

    _initial: Optional[Path] = runtime(None)  # the saved initial adapter, which the export converts against

    def lora_kwargs(self, model) -> dict:
        init = "pissa" if self.svd_niter is None else f"pissa_niter_{self.svd_niter}"
        return {**super().lora_kwargs(model), "init_lora_weights": init}

    def apply(self, model):
        peft_model = super().apply(model)
        # The initial adapter is what the export needs to turn PiSSA into a LoRA on the original W0.
        self._initial = Path(tempfile.mkdtemp(prefix="pissa-init-"))
        config = peft_model.peft_config["default"]
        config.init_lora_weights = True  # reloading the saved initial adapter must not run the SVD again
        peft_model.save_pretrained(str(self._initial))
        config.init_lora_weights = self.lora_kwargs(model)["init_lora_weights"]
        return peft_model

    def export(self, model, out_dir: Path) -> dict:
        model.save_pretrained(str(out_dir), path_initial_model_for_weight_conversion=str(self._initial))
        shutil.rmtree(self._initial, ignore_errors=True)
        _add_trained_modules(model, out_dir)
        return {
            "format": "peft",
            "path": str(out_dir),
            "rank": 2 * self.r,
            "load_with": "peft.PeftModel.from_pretrained(original_base_model, path)  # a plain LoRA",
        }

    def report(self, model) -> dict:
        return {**super().report(model), "init": self.lora_kwargs(model)["init_lora_weights"]}


def _add_trained_modules(model, out_dir: Path) -> None:
    """PEFT's PiSSA-to-LoRA conversion writes only the lora_ tensors; a classifier's trained head
    (modules_to_save) would be left out and the adapter would not load. Add those tensors as PEFT
    names them in any saved adapter."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    kept = {k: v for k, v in get_peft_model_state_dict(model).items() if "lora_" not in k}
    if not kept:
        return
    path = out_dir / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors.update({k: v.detach().cpu().contiguous() for k, v in kept.items()})
    save_file(tensors, str(path), metadata={"format": "pt"})
