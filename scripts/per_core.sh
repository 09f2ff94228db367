# Sourced by the scripts that split their work over the cores (sanitize.sh, fuzz.sh).
# per_core LOG JOB SHOW: runs "JOB i" for i = 0 .. nproc-1 at once, each one's output in LOG<i>.log,
# then waits for them in order and calls "SHOW i status" for each; returns the first non-zero status.
per_core() {
  local log=$1 job=$2 show=$3 jobs i status result=0 pids=()
  jobs=$(nproc)
  for ((i = 0; i < jobs; ++i)); do
    "$job" "$i" >"$log$i.log" 2>&1 &
    pids+=($!)
  done
  for ((i = 0; i < jobs; ++i)); do
    status=0
    wait "${pids[$i]}" || status=$?
    "$show" "$i" "$status"
    ((result != 0)) || result=$status
  done
  return "$result"
}
