#!/usr/bin/env bash
# The GPU checks of a session lent a device machine (bench/RESULTS.md): CUDA tests, bench/throughput.py on CUDA,
# a short CIFAR-10-LT run per preset (bench/methods.py --cifar) and the default text run on the GPU (text_cnn).
# Usage: bench/gpu_checks.sh CIFAR_TAR_GZ WORDNET_DIR OUT_DIR [STEPS]   (about 8 minutes on an H100/H200)
set -u
tarball=$1 wordnet=$2 out=$3 steps=${4:-300}
export PYTHONUNBUFFERED=1 SSLVIZ_HOME=/tmp/sslviz-gpu SSLVIZ_WORDNET=$wordnet SSLVIZ_WARM_WORKER=0
py=${PYTHON:-python3}
{ nvidia-smi -L; $py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$out/device.txt"
mkdir -p /tmp/cifar10 && tar xzf "$tarball" -C /tmp/cifar10
timeout 150 $py -m pytest -q -p no:cacheprovider -o addopts="-ra" tests/test_augment.py tests/test_trainer.py \
    tests/test_first_paint.py -k "cuda or gpu" 2>&1 | tee "$out/cuda_tests.txt"
timeout 180 $py bench/throughput.py --device cuda 2>&1 | tee "$out/throughput.txt"
timeout 330 $py bench/methods.py --cifar /tmp/cifar10 --steps "$steps" --seeds 0 2>&1 | tee "$out/methods.txt"
( time timeout 90 $py -m sslviz --store /tmp/sslviz-gpu/text.db train --dataset wordnet --device cuda ) 2>&1 \
    | tail -15 | tee "$out/text_cuda.txt"
