#!/bin/bash
# The prediction bench on a lent GPU machine (python 3.12 and torch, no GDAL stack, no network):
#   bash bench/device_kit.sh fetch   # here: the wheels it lacks into .whl/ (git-ignored; under the 64 MiB a run carries)
#   bash bench/device_kit.sh run [auto|cpu]   # there (carry .whl and bench_output/predict/run-full): the 20000² η bench
#                                             # on the GPU (auto), or on its CPUs (cpu); both when not said (~2 calls' worth)
# rasterio 1.4.3 and pyogrio 0.10.0 rather than the newest: their wheels keep the kit under the limit.
set -euo pipefail
case "${1:-}" in
  fetch)
    mkdir -p .whl
    python3 -m pip download -q --dest .whl --only-binary=:all: --no-deps --python-version 3.12 \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_24_x86_64 \
      rasterio==1.4.3 pyogrio==0.10.0 pyproj==3.7.2 shapely==2.2.0 geopandas==1.1.4 pydantic==2.14.4 \
      pydantic_core==2.50.5 annotated-types typing-inspection 'typing_extensions>=4.16' \
      segmentation-models-pytorch==0.6.0 affine==2.4.0 cligj click-plugins
    size=$(du -sm .whl | cut -f1)
    echo "kit: ${size} MiB in .whl"
    [ "$size" -lt 64 ] || { echo "over the 64 MiB a device run carries" >&2; exit 1; }
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/core:$PWD PYTHONUNBUFFERED=1
    out=${OUT:-/tmp}
    for device in ${2:-auto cpu}; do
      python3 -m bench.bench_predict --full --repeats 1 --skip-rss --threads --device "$device" 2>&1 \
        | tee "$out/bench-$device.log"
    done
    ;;
  *)
    echo "usage: bash bench/device_kit.sh fetch | run [auto|cpu]" >&2
    exit 2
    ;;
esac
