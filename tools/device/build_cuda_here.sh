#!/usr/bin/env bash
# Builds sd-worker-cuda on a machine with no GPU and no CUDA toolkit, for a GPU
# machine with an NVIDIA driver for CUDA 13 (e.g. the lent H100/H200 machines).
#
# nvcc, the CUDA headers and the cuBLAS/cuRAND/NVRTC/cudart libraries come from
# NVIDIA's pip wheels, pinned to CUDA 13.0 (nvvm 13.0 too: a newer one emits PTX a
# 13.0 driver refuses). The driver library libcuda.so.1 only exists on a GPU
# machine, so the link uses a stand-in exporting the driver entry points listed
# in libcuda-symbols.txt; the real driver library is loaded at run time.
#
#   bash tools/device/build_cuda_here.sh          # from the repository root
#
# TOOLCHAIN (default /tmp/sd-cuda-toolchain) holds the link folder and, unless
# VENV names another, the venv with the wheels;
# CARGO_TARGET_DIR is respected; CUDA_COMPUTE_CAP (default 90: H100/H200) picks the
# GPU generation; FEATURES=flash-attn adds FlashAttention-2 (its kernels take hours
# on a few cores; CANDLE_FLASH_ATTN_BUILD_DIR keeps them between builds). The stripped, xz-compressed binary lands in .device/, which
# tools/device/cuda_check.sh reads on the GPU machine.
set -euo pipefail
TOOLCHAIN=${TOOLCHAIN:-/tmp/sd-cuda-toolchain}
VENV=${VENV:-$TOOLCHAIN/venv}
mkdir -p "$TOOLCHAIN/lib"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 \
        nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85
fi
NV=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
for lib in cublas.so.13 cublasLt.so.13 cudart.so.13 curand.so.10 nvrtc.so.13; do
    ln -sfn "$NV/lib/lib$lib" "$TOOLCHAIN/lib/lib${lib%%.so*}.so"
done
sed 's/.*/void &(void) {}/' tools/device/libcuda-symbols.txt >"$TOOLCHAIN/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TOOLCHAIN/lib/libcuda.so" "$TOOLCHAIN/cuda_stub.c"
ln -sfn libcuda.so "$TOOLCHAIN/lib/libcuda.so.1"

export PATH=$NV/bin:$PATH NVCC=$NV/bin/nvcc CUDA_ROOT=$TOOLCHAIN
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
export LD_LIBRARY_PATH=$TOOLCHAIN/lib:$NV/lib
cargo build --release -p sd-worker --features "cuda${FEATURES:+,$FEATURES}" --bin sd-worker-cuda
target=${CARGO_TARGET_DIR:-target}
mkdir -p .device
strip -o .device/sd-worker-cuda "$target/release/sd-worker-cuda"
xz -9 -f .device/sd-worker-cuda
ls -l .device/sd-worker-cuda.xz
