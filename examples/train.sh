#!/bin/sh
# A stand-in training command: prints what it would train on, pinned to the exact revision.
set -eu
echo "training on $1 at revision $2 (run $RUN_ID, attempt $RUN_ATTEMPT)"
for step in 1 2 3; do
  echo "step $step/3"
  sleep 1
done
echo "done"
