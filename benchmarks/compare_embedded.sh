#!/usr/bin/env bash
# Reproduce the README's comparison tables on the embedded models (no server, no API key), 2-core machine.
# Each run is resumable: an (optimizer, seed) already in the output folder is not run again.
set -euo pipefail
export LITELLM_LOCAL_MODEL_COST_MAP=True
# StereoSet bias type, shipped slice: every optimizer, seed 0 (about 15 min)...
pld-optim compare quickstart --out out/compare --seeds 0 \
  --optimizers zero-shot,cot,bootstrap-fewshot,infer-rules-0shot,miprov2-0shot,pld,infer-rules,miprov2,copro,simba,gepa
# ... and the spread over two seeds for six of them (about 7 min on a fresh folder).
pld-optim compare quickstart --out out/compare-seeds --seeds 0,1 \
  --optimizers zero-shot,cot,bootstrap-fewshot,infer-rules-0shot,miprov2-0shot,pld
# ContractNLI sample: 50 train documents, dev.json split by document, contracts windowed to 384 tokens.
pld-optim compare configs/contract_nli_local.yaml --out out/compare-cnli \
  --optimizers zero-shot,cot,bootstrap-fewshot,infer-rules-0shot,pld
