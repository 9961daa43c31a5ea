#!/usr/bin/env bash
# The GPU measurements, for one lent GPU machine (docs/performance.md, "GPU" and "GPU session kit").
#
# Run from the repository root on the GPU machine, after `make device-wheels` here and with .whl
# carried there:   bash scripts/gpu_session.sh STEP [STEP ...]
# One device-tool call may run 10 minutes: `setup perf-nockpt`, `setup perf-ckpt`, `setup mfu e2e`,
# `setup compile`.
#   setup    install the carried wheels into /tmp/site; record versions and nvidia-smi
#   perf-nockpt / perf-ckpt
#            bench.perf on the Llama-2-7B shape (random bf16 weights, seq 2048): LoRA, cLA, c3LA,
#            PrunedLoRA, L1RA, AdaLoRA, DoRA and full FT (Adafactor), checkpointing off / on
#   mfu      LoRA alone at batch 1, 2 and 4, checkpointing off and on, for the MFU target
#   compile  bench.perf --compile (inductor) for COMPILE_METHODS, checkpointing off; a compiled
#            method that trains nothing (gradient norm 0) is refused by bench.perf
#            and bench.train as an invalid row / a failed run, not printed as a speed
#   e2e      a short bench.run on the GPU (train=gpu): ASDiv training, GSM8K evaluation
#   gputest  the gpu-marked compile check (tests/bench/test_compile.py) for GPU_TEST_METHODS:
#            per-parameter gradients of one compiled step (inductor, CUDA, bf16) against eager
#   mfu-compile
#            LoRA compiled at batch MFU_COMPILE_BATCH (the MFU target: compile allowed, batch >= 2)
#   events   EVENT_METHODS at the window's own cadence (every event in the window): one event's cost
#   profile  a torch.profiler table of 3 steady steps for lora, cla and l1ra (into $OUT/profile/)
#   alllinear
#            LoRA and cLA with adapters on all seven linear layers at batch ALL_LINEAR_BATCH,
#            eager and compiled (the cLA <= 0.75x LoRA target)
#   nemo / nemo-compile
#            the row like-for-like with NeMo AutoModel's published LoRA figure: NEMO_MODEL
#            (Llama-3.1-8B shape), rank 16 on all linear layers, sequence NEMO_SEQ, batch
#            NEMO_BATCH, LoRA and cLA, once per NEMO_KERNELS (none, liger), eager / compiled
#   evalspeed
#            one base-model GSM8K pass over the full test split (bench.perf.eval_speed) with
#            eval.batch_size=EVAL_BATCH: random weights, so every answer runs to 256 tokens
# Every bench.perf row does one micro-batch per optimizer step (--grad-accum 1, pinned over the
# 7B GSM8K profile's grad_accum 4, conf/profile/task/7b_gsm8k.yaml).
# Each step writes into $OUT (default ./gpu-out) one or two files besides versions.txt and log.txt
# (the device tool returns 8 files per call: choose the steps of one call accordingly). The knobs below are environment variables so
# that the same script runs as a CPU smoke test on a tiny model (tests/bench/test_gpu_session.py).
set -euo pipefail
OUT=${OUT:-gpu-out}
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-llama2-7b}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
SEQ=${SEQ:-2048}
BATCH=${BATCH:-1}
RANK=${RANK:-16}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
METHODS=${METHODS:-lora,cla,c3la,prunedlora,l1ra,adalora,dora,full}
COMPILE_METHODS=${COMPILE_METHODS:-lora,cla,c3la,prunedlora,l1ra}
MFU_BATCHES=${MFU_BATCHES:-1 2 4}
MFU_CKPT=${MFU_CKPT:-both}
MFU_COMPILE_BATCH=${MFU_COMPILE_BATCH:-2}
ALL_LINEAR_BATCH=${ALL_LINEAR_BATCH:-2}
GPU_TEST_METHODS=${GPU_TEST_METHODS:-lora,cla,c3la,prunedlora,l1ra}
# periodic events (rank updates, phase switches) at the cadence of a run of CADENCE steps; empty:
# the timed window's own length, where L1RA updates ranks on every step (the H200 run's 1.18x)
CADENCE=${CADENCE-1000}
EVENT_METHODS=${EVENT_METHODS:-l1ra,c3la,adalora}
NEMO_MODEL=${NEMO_MODEL:-llama3.1-8b}
NEMO_SEQ=${NEMO_SEQ:-4096}
NEMO_BATCH=${NEMO_BATCH:-2}
NEMO_RANK=${NEMO_RANK:-16}
NEMO_KERNELS=${NEMO_KERNELS:-none liger}
EVAL_BATCH=${EVAL_BATCH:-auto}
EVAL_LIMIT=${EVAL_LIMIT:-}   # empty: the whole test split (1,319 questions)
E2E_STEPS=${E2E_STEPS:-30}
E2E_LIMIT=${E2E_LIMIT:-50}
MODEL_ARGS=${MODEL_ARGS:-model.init=random model.tokenizer=gpt2-offline model.dtype=bfloat16}
RUNS=${RUNS:-/tmp/gpu-session-runs}
WHEELS=${WHEELS:-.whl}   # carried wheels (make device-wheels), installed by `setup` into SITE
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ -d "$SITE" ]; then export PYTHONPATH=$SITE:$PWD; else export PYTHONPATH=$PWD; fi

perf() {  # perf CHECKPOINTING NAME METHODS [bench.perf options]
    # shellcheck disable=SC2086  # MODEL_ARGS is a list of overrides
    "$PYTHON" -m bench.perf --model "$MODEL" --methods "$3" --device "$DEVICE" --precision "$PRECISION" \
        --seq "$SEQ" --batch "$BATCH" --grad-accum 1 --rank "$RANK" --steps "$STEPS" --warmup "$WARMUP" \
        ${CADENCE:+--cadence-steps "$CADENCE"} --checkpointing "$1" "${@:4}" $MODEL_ARGS --out "$OUT/$2.md" 2>&1 |
        tee -a "$OUT/log.txt"
}

full_only() {  # full fine-tuning's optimizer, when full is among METHODS
    case ",$METHODS," in *,full,*) echo "--only full:train.optimizer=adafactor" ;; esac
}

one_step() {
    local step=$1
    case "$step" in
    setup)
        if [ -d "$WHEELS" ]; then
            "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
                "$WHEELS"/*.whl
            export PYTHONPATH=$SITE:$PWD
        fi
        { date -u +%FT%TZ; git rev-parse --short HEAD 2>/dev/null || true
          "$PYTHON" -c 'import sys, torch, transformers, peft, accelerate
print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda)
print("transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'
          nvidia-smi 2>/dev/null || true; } 2>&1 | tee "$OUT/versions.txt" ;;
    perf-nockpt) perf false perf-nockpt "$METHODS" $(full_only) ;;
    perf-ckpt) perf true perf-ckpt "$METHODS" $(full_only) ;;
    compile) perf false compile "$COMPILE_METHODS" --compile --no-bare ;;
    mfu-compile) perf false mfu-compile lora --compile --no-bare --batch "$MFU_COMPILE_BATCH" ;;
    events) CADENCE='' perf false events "$EVENT_METHODS" --no-bare ;;
    profile) perf false profile "lora,cla,l1ra" --no-bare --profile "$OUT/profile" ;;
    alllinear)
        perf false alllinear lora,cla --no-bare --batch "$ALL_LINEAR_BATCH" model.adapter_targets=all-linear
        perf false alllinear-compile lora,cla --compile --no-bare --batch "$ALL_LINEAR_BATCH" \
            model.adapter_targets=all-linear ;;
    nemo | nemo-compile)
        local compiled=()
        [ "$step" = nemo-compile ] && compiled=(--compile)
        for k in $NEMO_KERNELS; do
            MODEL=$NEMO_MODEL SEQ=$NEMO_SEQ RANK=$NEMO_RANK perf false "$step-$k" lora,cla "${compiled[@]}" --no-bare \
                --batch "$NEMO_BATCH" --kernels "$k" model.adapter_targets=all-linear
        done ;;
    evalspeed)
        # shellcheck disable=SC2086
        # (train_source: nothing trains, but the task checks that its training data is reachable)
        "$PYTHON" -m bench.perf.eval_speed --model "$MODEL" --task gsm8k --device "$DEVICE" --out "$OUT/evalspeed.md" \
            $MODEL_ARGS task.train_source=asdiv eval.batch_size="$EVAL_BATCH" ${EVAL_LIMIT:+eval.limit=$EVAL_LIMIT} \
            2>&1 | tee -a "$OUT/log.txt"
        return "${PIPESTATUS[0]}" ;;
    gputest)
        local ids=()
        for m in ${GPU_TEST_METHODS//,/ }; do
            ids+=("tests/bench/test_compile.py::test_cuda_bf16_compiled_gradients_match_eager[$m]")
        done
        "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider "${ids[@]}" 2>&1 | tee "$OUT/gputest.txt"
        return "${PIPESTATUS[0]}" ;;
    mfu)
        for b in $MFU_BATCHES; do
            # shellcheck disable=SC2086
            "$PYTHON" -m bench.perf --model "$MODEL" --methods lora --device "$DEVICE" --precision "$PRECISION" \
                --seq "$SEQ" --batch "$b" --grad-accum 1 --rank "$RANK" --steps "$STEPS" --warmup "$WARMUP" --checkpointing "$MFU_CKPT" \
                --no-bare $MODEL_ARGS --out "$OUT/mfu-one.md" 2>&1 | tee -a "$OUT/log.txt"
            cat "$OUT/mfu-one.md" >> "$OUT/mfu.md" && echo >> "$OUT/mfu.md" && rm "$OUT/mfu-one.md"
        done ;;
    e2e)
        # shellcheck disable=SC2086
        rm -rf "$RUNS"
        "$PYTHON" -m bench.run model="$MODEL" $MODEL_ARGS method=lora task=gsm8k task.train_source=asdiv \
            train=gpu train.device="$DEVICE" train.mixed_precision="$PRECISION" train.max_steps="$E2E_STEPS" \
            eval.limit="$E2E_LIMIT" eval.batch_size=16 logger=none run.root="$RUNS" 2>&1 | tee -a "$OUT/log.txt"
        find "$RUNS" -name result.json -exec cp {} "$OUT/e2e-result.json" \; ;;
    *) echo "unknown step '$step'; steps: setup perf-nockpt perf-ckpt mfu compile mfu-compile alllinear nemo nemo-compile events profile evalspeed gputest e2e" >&2; return 2 ;;
    esac
}

failed=0
for step in "$@"; do  # a failed step is reported and the next one still runs
    one_step "$step" || { echo "step $step FAILED" | tee -a "$OUT/log.txt"; failed=1; }
done
exit $failed
