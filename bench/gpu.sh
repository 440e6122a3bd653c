#!/usr/bin/env bash
# GPU measurements in one call: environment, the engine and transform tests on the GPU,
# the sweep's FLOP rate against a large product, the polar methods, and buckets.
#
#   bash bench/gpu.sh           on a machine with one NVIDIA GPU: each part has a time limit,
#                               together 490 s (8.2 minutes) if every one were reached
#   bash bench/gpu.sh --tiny    every part at tiny sizes on whatever device JAX finds
#                               (a check of the script on a CPU: no measurement of merit)
#
# Run from anywhere; it works in the repository root. Environment: PYTHON (default python3),
# OUT (a folder for gpu.log and the parts' JSON; default a new temporary folder),
# SPECDYN_GPU_TESTS (test files of part 2, overriding the default list).
#
# Parts, each with a header, a time limit (`timeout`) and its exit status; a part that
# fails or runs out of time does not stop the next:
#   0  packages: specdyn runs from this tree (PYTHONPATH); what Python lacks is installed
#      from wheels in .whl/ (no index: a GPU machine may have no network), see below
#   1  environment: nvidia-smi, python, jax, jaxlib, GPU plugin, devices, matmul precision
#   2  tests of the engine and the transforms, on the GPU (pytest -n 12); failures are rerun
#      once at JAX_DEFAULT_MATMUL_PRECISION=highest, which tells TF32 round-off (JAX's
#      default for float32 products on recent NVIDIA GPUs) from real failures
#   3  bench/sweep.py --dim 256 --seeds 64 --sweep-only --peak-matmul 8192 (1024 runs; FLOP
#      rate against an 8192 x 8192 float32 product timed in the same run)
#   4  bench/polar_methods.py: SVD vs Newton-Schulz vs Polar Express at 512, 1024, 4096 in
#      float32 and bfloat16 (SVD of a bfloat16 input computes in float32: XLA has no
#      half-precision SVD)
#   5  bench/dimensions.py --modes auto,none: buckets against one program per size
#   6  goals, one PASS/FAIL line each: sweep >= 30% of the matmul peak; Newton-Schulz >= 5x
#      faster than SVD at n >= 1024 (each dtype); buckets ("auto") cold >= 3x faster than
#      one program per size
# Exit status 0 when every part ran to its end (whatever the goals say), else 1; 2 when
# packages are missing.
#
# Packages. The project's extra `cuda` is jax[cuda12]. Its wheels for Python 3.12 on
# x86-64 Linux (jax-cuda12-plugin, jax-cuda12-pjrt, nvidia-cublas/cudnn/cusolver/...-cu12)
# come to about 3.2 GiB (jax 0.12.0.1, measured 2026-12-07); jax-cuda12-pjrt alone is
# 183 MiB. They cannot travel with a source tree of tens of MiB, so the script first uses
# the JAX already installed where it runs (a GPU image usually has one with its CUDA
# plugin, cuda12 or cuda13) and installs only what is missing. To carry wheels anyway,
# on a machine with network, in the repository root (.whl/ is git-ignored):
#
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl "jax[cuda12]==0.12.0.1" optax chex diffrax equinox xarray scipy \
#     matplotlib tqdm threadpoolctl pytest pytest-xdist hypothesis
#
# (the Python version must be the GPU machine's; leave out "jax[cuda12]==..." to carry
# only the small pure-Python packages). This script then runs
# `pip install --no-index --find-links .whl --target <tmp> <what is missing>`.

set -u -o pipefail
cd "$(dirname "$0")/.."

SIZE=full
for arg in "$@"; do
    case "$arg" in
        --tiny) SIZE=tiny ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument $arg (use --tiny or nothing)" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
OUTDIR=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/specdyn-gpu.XXXXXX")}
mkdir -p "$OUTDIR"
LOG=$OUTDIR/gpu.log
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # part 2 runs several test processes on one GPU
STARTED=$(date +%s)
FAILED_PARTS=""

header() { printf '\n========== %s (%s UTC, %d s since start) ==========\n' "$1" "$(date -u +%H:%M:%S)" "$(( $(date +%s) - STARTED ))"; }

# part LABEL SECONDS COMMAND...: run under a time limit, report status and duration.
part() {
    local label=$1 limit=$2 began rc
    shift 2
    header "$label (limit ${limit} s)"
    echo "+ $*"
    began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    [ "$rc" -ne 0 ] && FAILED_PARTS="$FAILED_PARTS [$label]"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "---------- $label: TIMEOUT after ${limit} s"
    else
        echo "---------- $label: exit status $rc in $(( $(date +%s) - began )) s"
    fi
    return "$rc"
}

echo "bench/gpu.sh --size $SIZE; log: $LOG; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# ---- 0: packages
header "0 packages"
missing=$("$PY" - "$SIZE" <<'EOF'
import importlib.util, sys
need = {"jax": "jax", "jaxlib": "jaxlib", "numpy": "numpy", "scipy": "scipy", "optax": "optax",
        "chex": "chex", "diffrax": "diffrax", "equinox": "equinox", "xarray": "xarray",
        "matplotlib": "matplotlib", "tqdm": "tqdm", "threadpoolctl": "threadpoolctl",
        "pytest": "pytest", "xdist": "pytest-xdist", "hypothesis": "hypothesis"}
missing = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
if sys.argv[1] == "full" and "jax" in missing:  # the GPU build, with the CUDA plugin
    missing = [pkg for pkg in missing if pkg not in ("jax", "jaxlib")] + ["jax[cuda12]"]
elif sys.argv[1] == "full":
    try:
        import jax
        if jax.default_backend() != "gpu":
            missing.append("jax[cuda12]")
    except Exception as err:  # a broken plugin: reinstall jax with CUDA
        print(f"jax failed to start: {err!r}", file=sys.stderr)
        missing.append("jax[cuda12]")
print(" ".join(missing))
EOF
)
if [ -z "$missing" ]; then
    echo "every package is there; nothing installed"
elif [ "$SIZE" = tiny ]; then
    echo "missing here: $missing (tiny mode installs nothing; install them, or set PYTHON)"
    exit 2
elif compgen -G ".whl/*.whl" >/dev/null; then
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/specdyn-site.XXXXXX")
    echo "missing: $missing; installing from .whl/ into $SITE (no index)"
    # shellcheck disable=SC2086  # $missing is a list of requirement names
    "$PY" -m pip install -q --no-index --find-links .whl --no-compile --target "$SITE" $missing || exit 2
    export PYTHONPATH=$SITE:$PYTHONPATH
else
    echo "missing: $missing, and no wheels in .whl/: see this script's header for the download command"
    exit 2
fi
if [ "$SIZE" = full ] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
    echo "FAIL: JAX finds no GPU here (backend: $("$PY" -c 'import jax; print(jax.default_backend())' 2>&1 | tail -1)); use --tiny on a CPU"
    exit 1
fi

# ---- 1: environment
header "1 environment"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
else
    echo "nvidia-smi: not found"
fi
"$PY" - <<'EOF'
import importlib.metadata as md, os, platform, sys
import jax
names = ["jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
         "numpy", "scipy", "optax", "xarray"]
versions = []
for name in names:
    try:
        versions.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
print(f"python {platform.python_version()} ({sys.executable}); " + ", ".join(versions))
print(f"backend {jax.default_backend()}; devices {jax.devices()}")
print(f"device kind: {jax.devices()[0].device_kind}; {os.cpu_count()} CPU cores")
print(f"jax_default_matmul_precision: {jax.config.jax_default_matmul_precision} "
      "(None: XLA's default, TF32 for float32 products on recent NVIDIA GPUs)")
EOF

# ---- 2: tests of the engine and the transforms
if [ "$SIZE" = full ]; then
    TESTS=${SPECDYN_GPU_TESTS:-tests/test_polar.py tests/test_transforms.py tests/test_optimizers.py tests/test_spectral_power.py tests/test_simulate.py tests/test_sweep.py tests/test_buckets_exact.py}
    PYTEST=(-n 12 -v --tb=short); TEST_LIMIT=140; RERUN_LIMIT=40  # -v: outcomes in the log even on a timeout
else
    TESTS=${SPECDYN_GPU_TESTS:-tests/test_transforms.py}
    PYTEST=(-n 2 -q); TEST_LIMIT=300; RERUN_LIMIT=120
fi
CACHE=$(mktemp -d "${TMPDIR:-/tmp}/specdyn-pytest.XXXXXX")
# shellcheck disable=SC2086  # $TESTS is a list of files
part "2 tests" "$TEST_LIMIT" \
    "$PY" -m pytest $TESTS "${PYTEST[@]}" -rfE -o cache_dir="$CACHE"
if [ $? -eq 1 ]; then  # some tests failed: are they TF32's?
    part "2b failed tests again, JAX_DEFAULT_MATMUL_PRECISION=highest" "$RERUN_LIMIT" \
        env JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -m pytest $TESTS -q --tb=short -rfE --lf -o cache_dir="$CACHE"
fi

# ---- 3 to 5: benchmarks
if [ "$SIZE" = full ]; then
    SWEEP=(--dim 256 --seeds 64 --sweep-only --peak-matmul 8192); SWEEP_LIMIT=110
    POLAR=(--sizes 512,1024,4096 --dtypes float32,bfloat16 --repeats 5); POLAR_LIMIT=90
    DIMS=(--modes auto,none); DIMS_LIMIT=110
else
    SWEEP=(--dim 16 --seeds 2 --steps 20 --sweep-only --peak-matmul 256); SWEEP_LIMIT=300
    POLAR=(--sizes 16,32 --dtypes float32,bfloat16 --repeats 2); POLAR_LIMIT=300
    DIMS=(--small --steps 20 --seeds 1 --rates 1 --modes auto,none); DIMS_LIMIT=300
fi
part "3 sweep throughput: bench/sweep.py" "$SWEEP_LIMIT" \
    "$PY" bench/sweep.py "${SWEEP[@]}" --json "$OUTDIR/sweep.json"
part "4 polar methods: bench/polar_methods.py" "$POLAR_LIMIT" \
    "$PY" bench/polar_methods.py "${POLAR[@]}" --json "$OUTDIR/polar.json"
part "5 dimensions, buckets vs one program per size: bench/dimensions.py" "$DIMS_LIMIT" \
    "$PY" bench/dimensions.py "${DIMS[@]}" --json "$OUTDIR/dimensions.json"

# ---- 6: goals
header "6 goals"
"$PY" - "$OUTDIR" "$SIZE" <<'EOF'
import json, os, sys
out, size = sys.argv[1], sys.argv[2]
note = "  [CPU, tiny sizes: checks the script, not a measurement of merit]" if size == "tiny" else ""

def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None

def goal(ok, text):
    print(f"{'PASS' if ok else 'FAIL'}: {text}{note}")

sweep = load("sweep.json")
if sweep is None:
    print("MISSING: sweep >= 30% of the matmul peak (part 3 wrote no result)")
else:
    goal(sweep["fraction_of_peak"] >= 0.30,
         f"sweep warm at {sweep['fraction_of_peak']:.0%} of the {sweep['peak_size']}² float32 matmul peak "
         f"({sweep['rate'] / 1e12:.2f} of {sweep['peak'] / 1e12:.2f} TFLOP/s; goal >= 30%)")
polar = load("polar.json")
if polar is None:
    print("MISSING: Newton-Schulz >= 5x faster than SVD at n >= 1024 (part 4 wrote no result)")
else:
    big = {k: v for k, v in polar["newton_schulz_speedup"].items() if int(k.split("/")[1]) >= 1024}
    if not big:  # tiny sizes: the largest measured stands in
        largest = max(int(k.split("/")[1]) for k in polar["newton_schulz_speedup"])
        big = {k: v for k, v in polar["newton_schulz_speedup"].items() if int(k.split("/")[1]) == largest}
    for key, speedup in big.items():
        dtype, n = key.split("/")
        goal(speedup >= 5, f"Newton-Schulz {speedup:.1f}x faster than SVD, {dtype} n={n} (goal >= 5x)")
dims = load("dimensions.json")
if dims is None or not {"auto", "none"} <= set(dims["modes"]):
    print("MISSING: buckets 'auto' cold >= 3x faster than one program per size (part 5 did not finish both)")
else:
    auto, none = dims["modes"]["auto"], dims["modes"]["none"]
    goal(none["cold_s"] >= 3 * auto["cold_s"],
         f"buckets 'auto' cold {auto['cold_s']:.1f} s against one program per size {none['cold_s']:.1f} s: "
         f"{none['cold_s'] / auto['cold_s']:.2f}x faster (goal >= 3x); warm {auto['warm_s']:.1f} s "
         f"against {none['warm_s']:.1f} s")
EOF
header "done: log in $LOG"
# Exit status: 1 if a part failed or ran out of time (a goal's FAIL is a measurement, not an error).
if [ -n "$FAILED_PARTS" ]; then
    echo "parts that failed or ran out of time:$FAILED_PARTS"
    exit 1
fi
