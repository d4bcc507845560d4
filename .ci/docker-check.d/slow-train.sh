#!/bin/sh
# A training command that takes long enough for the container check to stop its worker while it runs.
set -eu
echo "training on $1 at revision $2 (run $RUN_ID, attempt $RUN_ATTEMPT)"
for step in 1 2 3 4 5 6 7 8; do
  echo "step $step/8"
  sleep 1
done
echo "done"
