# Step 9 closure on the H200: ncu profile, the full GPU tests, the methods section for the crossover lengths
export PYTHONUNBUFFERED=1 PBS_GIT_COMMIT=$1
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:.
LOG=$OUT/run.log
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; python3 -c "import torch,triton;print(torch.__version__,triton.__version__,torch.version.cuda)"; } > $LOG 2>&1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "== ncu: $NCU ($(el) s)" >> $LOG
timeout 200 $NCU --profile-from-start off --clock-control none --set full --import-source no \
  --metrics 'regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active$,regex:sm__pipe_.*cycles_active\.avg\.pct_of_peak_sustained_active$' \
  -f -o $OUT/step9-profile python3 -m benchmarks.kernel_sweep --out /tmp --parts profile --lengths 32768 >> $LOG 2>&1
echo "ncu rc $? ($(el) s)" >> $LOG
$NCU --import $OUT/step9-profile.ncu-rep --page details > $OUT/ncu-details.txt 2>&1
$NCU --import $OUT/step9-profile.ncu-rep --page raw --csv > $OUT/ncu-raw.csv 2>&1
echo "== gpu tests ($(el) s)" >> $LOG
timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_speed_gpu.py tests/gpu/test_nan_gpu.py -p no:cacheprovider >> $LOG 2>&1
echo "speed+nan rc $? ($(el) s)" >> $LOG
timeout 260 python3 -m pytest -q -m gpu tests/gpu -n 8 -p no:cacheprovider --ignore=tests/gpu/test_speed_gpu.py --ignore=tests/gpu/test_nan_gpu.py >> $LOG 2>&1
echo "xdist rc $? ($(el) s)" >> $LOG
for lens in '[65536,131072]' '[8192,16384,32768]'; do
  left=$(( 585 - $(el) )); [ $left -lt 30 ] && break
  echo "== methods $lens ($(el) s, $left s left)" >> $LOG
  timeout $left python3 -m experiments.bench_kernels 'sections=[dense,methods]' 'dense_variants=[sdpa_cudnn]' '~methods.pbs_permute_none' '~methods.pbs_antidiagonal' "seq_lens=$lens" warmup=2 reps=5 max_seconds_per_measurement=1.0 merge=true out_dir=$OUT/methods progress=false >> $LOG 2>&1
  echo "methods rc $? ($(el) s)" >> $LOG
done
