"""The building blocks methods share; every other module of `methods/` is one method.

- peft_common.py: PEFT-wrapped methods (the base class, target resolution, counts, export);
- rank_pruning.py: the RankPruning mixin (`sparsity`, the initial rank; AdaLoRA, PrunedLoRA);
- lora_surgery.py: in-place rank changes of PEFT LoRA layers (AdaLoRA, PrunedLoRA, L1RA);
- lora_export.py: an update sum_j B_j A_j written as a standard PEFT LoRA adapter;
- lora_chain.py, phases.py: chains of LoRA (CoLA, RAC, c3LA) and their phase schedules;
- column_adapter.py, gathered_columns.py: the column family (cLA, c3LA, PaCA): updates confined to
  selected input columns.
"""
