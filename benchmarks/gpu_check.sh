#!/usr/bin/env bash
# benchmarks/gpu_check.py on a bare GPU machine that has Python and torch but no network: install the wheels carried
# with the tree (Ray without its Java jar, pytest, what pip show says is missing), unpack MNIST where it was carried
# gzipped, run the check, and pack its folder as one archive.
#   bash benchmarks/gpu_check.sh WHEELS_DIR DATA_DIR OUT_DIR      (DATA_DIR holds MNIST/raw/, files gzipped or not)
set -euo pipefail
wheels=$1 data=$2 out=$3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl
for gz in "$data"/MNIST/raw/*.gz; do if [ -e "$gz" ] && [ ! -e "${gz%.gz}" ]; then gunzip -k "$gz"; fi; done
export PYTHONPATH="/tmp/site:$PWD" SWEEP_DATA_DIR="$data" PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$out"
tar -czf "$out.tar.gz" -C "$(dirname "$out")" "$(basename "$out")"
