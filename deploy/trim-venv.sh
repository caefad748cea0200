#!/bin/sh
# Remove from an installed runtime environment what no runtime path of the service uses
# (deploy/Dockerfile runs it right after installing project.dependencies; the reasons are in its
# header). The Dockerfile's smoke check then proves the runtime still works: it imports every
# entry point and runs a real job, a flatness report and a one-trial Tune sweep.
#
#   deploy/trim-venv.sh SITE_PACKAGES [STRIP_BINARIES]      # STRIP_BINARIES: 1 (default) or 0
#
# Every removal below was checked against this project's imports and against the packages'
# own imports (grep of the installed tree); deploy/smoke-check.py lists the packages removed
# on purpose, which `pip check` may then report as missing.
set -eu
site=${1:?usage: trim-venv.sh SITE_PACKAGES [STRIP_BINARIES]}
strip_binaries=${2:-1}
[ -d "$site/torch" ] && [ -d "$site/ray" ] && [ -d "$site/pyarrow" ] || {
    echo "trim-venv: $site is not the runtime's site-packages (no torch, ray or pyarrow)" >&2; exit 2; }

# torch: its C++ unit-test binaries (torch/bin, but the shared-memory manager torch uses) and
# libraries (loaded only by torch.testing's own tests), its headers (for torch.compile's C++
# backend and cpp_extension: no compiler in the image), and networkx, which only torch.compile's
# graph partitioner and fx passes import. sympy (with mpmath) stays: torch.optim's optimizers
# import torch._dynamo, which imports sympy, even in eager training.
rm -rf "$site/torch/test" "$site/torch/include"
find "$site/torch/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} +
rm -f "$site/torch/lib/libtorchbind_test.so" "$site/torch/lib/libjitbackend_test.so" \
    "$site/torch/lib/libbackend_with_compiler.so" "$site/torch/lib/libaoti_custom_ops.so"
rm -rf "$site"/networkx "$site"/networkx-*.dist-info

# Ray: its Java worker jars, the dashboard's JavaScript source maps, and three libraries that
# cannot even be imported here, since their own dependencies are not installed (ray[rllib],
# ray[serve], ray[llm] are not asked for): RLlib (gymnasium; Tune looks for it inside an
# ImportError guard), Serve (starlette, fastapi; the dashboard and the `ray` CLI load it inside
# guards too) and Ray LLM (vllm; only reached through Serve and ray.data.llm).
rm -rf "$site/ray/jars" "$site/ray/rllib" "$site/ray/serve" "$site/ray/llm"
find "$site/ray/dashboard/client/build" -name '*.map' -delete

# Test suites and benchmarks: every directory named `tests` (sympy's are 33 MB, pandas' 42,
# numpy's 16, pyarrow's 7, matplotlib's 6) or `benchmarks` (sympy's, jsonschema's: 2 MB). No
# installed module imports one at runtime (the testing helpers the packages export live in
# `testing` directories, which stay).
find "$site" -type d \( -name tests -o -name benchmarks \) -prune -exec rm -rf {} +

# pyarrow (Tune's storage layer, pyarrow.fs, and pandas' Arrow interop stay whole):
# - its C++ headers and Cython sources (building extensions against pyarrow only);
# - Arrow Flight (RPC over gRPC: nothing here uses it, and pyarrow.lib does not link it), and
#   the extension module of pyarrow's C++ tests;
# - the byte-identical copies the wheel carries of each libarrow_python*.so under its
#   development and full-version names (wheels cannot hold symbolic links) become links to the
#   SONAME file the extension modules load.
rm -rf "$site/pyarrow/include" "$site/pyarrow/src"
find "$site/pyarrow" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete
rm -f "$site"/pyarrow/_flight.cpython-*.so "$site"/pyarrow/libarrow_flight.so* \
    "$site"/pyarrow/libarrow_python_flight.so* "$site"/pyarrow/_pyarrow_cpp_tests.cpython-*.so
for soname in "$site"/pyarrow/libarrow_python*.so.[0-9]*; do
    case ${soname##*/} in *.so.*.*) continue;; esac    # the SONAME file: libX.so.NNNN
    for copy in "${soname%.so.*}.so" "$soname".*; do
        if [ -f "$copy" ] && [ ! -L "$copy" ] && cmp -s "$copy" "$soname"; then
            ln -sf "$(basename "$soname")" "$copy"
        fi
    done
done

# Type stubs (*.pyi: read by type checkers, never by the import system; torch's are 2.8 MB) and
# fontTools' Cython-generated C sources (its compiled modules stay).
find "$site" -name '*.pyi' -type f -delete
find "$site/fontTools" -name '*.c' -delete

# Symbol tables (STRIP_BINARIES=1): every shared object and Ray executable that still carries
# one, about 175 MB, most of it libtorch_cpu and Ray's and Arrow's own builds. Stripping keeps
# the dynamic symbols, so linking is unchanged; native stack traces name fewer functions. Left
# as they are: the libraries auditwheel grafted into *.libs folders and the extension modules it
# patched to find them (RPATH/RUNPATH naming a .libs folder: numpy's, Pillow's), since strip can
# break a file patchelf rewrote.
if [ "$strip_binaries" = 1 ]; then
    { find "$site" -type f \( -name '*.so' -o -name '*.so.*' \) ! -path '*.libs/*'
      echo "$site/ray/core/src/ray/gcs/gcs_server"; echo "$site/ray/core/src/ray/raylet/raylet"; } |
    while read -r f; do
        readelf -S "$f" 2>/dev/null | grep -q ' \.symtab ' || continue          # not ELF, or stripped
        readelf -d "$f" | grep -E '\((RPATH|RUNPATH)\)' | grep -q '\.libs' && continue  # auditwheel-patched
        strip --strip-unneeded "$f"
    done
fi
