#!/usr/bin/env bash
# One row of docs/adapt.md's "Parameters of its own" table: adapt the built-in model to a 5-pair subset's train/
# folder alone (a flat folder: no validation, the full run, the last step kept) and score it on the subset's test/.
# SUBSETS is adapt_subsets.py's output; extra arguments go to adapt. Prints: name, set, seed, KLD, flow-only KLD,
# corr_error, NLF KLD. BASE (default builtin) names another base model.
#
#     bash docs/studies/adapt_eval.sh SUBSETS WORK adapters polyu 0 --adapt adapters --lr 1e-3
set -euo pipefail
SUBSETS=${1:?usage: adapt_eval.sh SUBSETS WORK NAME SET SEED [adapt args...]}
WORK=${2:?} NAME=${3:?} SET=${4:?} SEED=${5:?}
shift 5
RUN="$WORK/$NAME-$SET-s$SEED" EVAL="$WORK/ev-$NAME-$SET-s$SEED"
nmflowgan adapt --base "${BASE:-builtin}" --data "$SUBSETS/$SET-k5-s$SEED/train" --seed "$SEED" --out "$RUN" --device cpu \
    --quiet --overwrite "$@" > "$RUN.log" 2>&1
nmflowgan evaluate --checkpoint "$RUN" --data "$SUBSETS/$SET-k5-s$SEED" --out "$EVAL" --device cpu --quiet \
    --overwrite > /dev/null 2>&1
python -c "import json, sys; m = json.load(open(sys.argv[1]))['models']; print('\t'.join(map(str, [
    '$NAME', '$SET', $SEED] + [round(m[s][k], 4) for s, k in (('nmflowgan', 'kld'), ('flow-only', 'kld'),
    ('nmflowgan', 'corr_error'), ('nlf', 'kld'))])))" "$EVAL/results.json"
