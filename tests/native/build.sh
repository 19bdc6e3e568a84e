#!/usr/bin/env bash
# Build the native sanitizer harness (no Python): the kernel headers of csrc/cyclad/ compiled
# directly into fuzz targets under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   tests/native/build.sh [OUT_DIR]                 # g++ (or $CXX): standalone drivers
#   LIBFUZZER=1 tests/native/build.sh [OUT_DIR]     # clang++: libFuzzer binaries (-fsanitize=fuzzer)
#
# Outputs OUT_DIR/fuzz_wire and OUT_DIR/fuzz_kernels (default OUT_DIR: build/native, or
# build/native-libfuzzer). Environment:
#   CXX                  compiler (default g++; clang++-14 or clang++ with LIBFUZZER=1)
#   JOBS                 parallel compiles (default 2)
#   CYCLAD_MULTIVERSION  1: keep the target_clones multiversioning (three ISA clones of every
#                        hot kernel; about 3x the compile time). Default 0 builds one baseline
#                        clone: the same source paths (the AVX-512 register network is chosen
#                        at run time from CPUID, not from the clone), under the sanitizers.
#   OPENMP               1 (default for g++): -fopenmp, so parallel_for really runs threads.
#   TARGETS              "wire kernels" (default), or one of them.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBFUZZER=${LIBFUZZER:-0}
if [[ $LIBFUZZER == 1 ]]; then
  OUT=${1:-build/native-libfuzzer}
  if [[ -z ${CXX:-} ]]; then
    CXX=$(command -v clang++-14 || command -v clang++ || true)
  fi
  [[ -n $CXX ]] || { echo "LIBFUZZER=1 needs clang++ (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
  SAN="-fsanitize=address,undefined"
  LINK_FUZZ="-fsanitize=fuzzer"
  COMPILE_FUZZ="-fsanitize=fuzzer-no-link"
  OPENMP=${OPENMP:-0}  # clang's -fopenmp needs libomp
else
  OUT=${1:-build/native}
  CXX=${CXX:-g++}
  SAN="-fsanitize=address,undefined"
  LINK_FUZZ=""
  COMPILE_FUZZ=""
  OPENMP=${OPENMP:-1}
fi
JOBS=${JOBS:-2}
mkdir -p "$OUT/obj"
FLAGS=(-std=c++17 -O1 -g $SAN -fno-sanitize-recover=all -fno-omit-frame-pointer
       -Wall -Wextra -Icsrc -Itests/native)
if [[ ${CYCLAD_MULTIVERSION:-0} != 1 ]]; then FLAGS+=(-DCYCLAD_NO_MULTIVERSION); fi
if [[ $OPENMP == 1 ]]; then FLAGS+=(-fopenmp -DCYCLAD_HAS_OPENMP); fi
echo "native harness: $CXX ${FLAGS[*]} $COMPILE_FUZZ -> $OUT"

compile() {  # src obj
  # shellcheck disable=SC2086
  "$CXX" "${FLAGS[@]}" $COMPILE_FUZZ -c "$1" -o "$2"
}
TARGETS=${TARGETS:-wire kernels}
srcs=()
[[ $TARGETS == *kernels* ]] && srcs+=(tests/native/ops_f32.cpp tests/native/ops_f64.cpp tests/native/fuzz_kernels.cpp)
[[ $TARGETS == *wire* ]] && srcs+=(tests/native/fuzz_wire.cpp)
[[ -z $LINK_FUZZ ]] && srcs+=(tests/native/driver_main.cpp)
# The two heavy units (ops_f32, ops_f64) first, in parallel.
pids=()
for src in "${srcs[@]}"; do
  obj="$OUT/obj/$(basename "${src%.cpp}").o"
  compile "$src" "$obj" &
  pids+=($!)
  if (( ${#pids[@]} >= JOBS )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
MAIN=()
[[ -z $LINK_FUZZ ]] && MAIN=("$OUT/obj/driver_main.o")
if [[ $TARGETS == *wire* ]]; then
  # shellcheck disable=SC2086
  "$CXX" "${FLAGS[@]}" $LINK_FUZZ "$OUT/obj/fuzz_wire.o" "${MAIN[@]}" -o "$OUT/fuzz_wire"
  echo "built $OUT/fuzz_wire"
fi
if [[ $TARGETS == *kernels* ]]; then
  # shellcheck disable=SC2086
  "$CXX" "${FLAGS[@]}" $LINK_FUZZ "$OUT/obj/fuzz_kernels.o" "$OUT/obj/ops_f32.o" \
    "$OUT/obj/ops_f64.o" "${MAIN[@]}" -o "$OUT/fuzz_kernels"
  echo "built $OUT/fuzz_kernels"
fi
