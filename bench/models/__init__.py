"""Models: what the suite loads and adapts.

- loading.py: cfg.model -> (model, tokenizer, provenance), and the checks that it can be had;
- sources.py: the hub, packaged GGUF files and folders, the suite's own model files (conf/model/);
- kinds.py: causal LM or encoder (`model.kind=auto`), and the class a task's head needs;
- tokenizers.py: named offline tokenizers (`model.tokenizer`);
- targets.py: which linear layers adapters go on (`model.adapter_targets`: lists and presets);
- kernels.py: fused training kernels (`train.kernels=liger`).

Nothing is imported here: `bench.config` reads targets.py without loading torch.
"""
