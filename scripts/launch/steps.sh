# Step bookkeeping for the job scripts that `mof-llava sweep plan` writes. Sourced, not run:
#     source scripts/launch/steps.sh
#
#   step RUN_DIR NAME ARTIFACT COMMAND...
#       Runs COMMAND unless step NAME of the run is done, and records what happens on disk, in
#       RUN_DIR/status/:  NAME.running (host, pid, SLURM job, start time) while it runs,
#                         NAME.exit    (its exit status) when it ends, NAME.log (its output).
#       ARTIFACT (relative to RUN_DIR) is the file the step writes last. A step is done when
#       ARTIFACT exists, the step is not running and its last exit status was 0. A step another
#       live process is running (its .running marker names it) is refused, not started twice.
#       Returns COMMAND's exit status, so a failed step stops a `set -e` script.
#
#   submit RUN_DIR "NAME:ARTIFACT ..." SBATCH_FILE [AFTER_JOB]
#       Submits SBATCH_FILE with sbatch (after job AFTER_JOB succeeded, when given) unless all the
#       listed steps are done; records NAME.submitted. Prints the job id: the new one, the one that
#       already holds these steps (still queued or running), or nothing when all are done.
#
# `mof-llava sweep status` reads the same files (mof_llava/experiments/status.py). Set
# RECORD_STATUS=0 on the other nodes of a multi-node run: they run the commands, the head records.

_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

step_done() {  # step_done RUN_DIR NAME ARTIFACT
  local status="$1/status/$2"
  [[ -e "$1/$3" && ! -e "$status.running" ]] || return 1
  [[ ! -e "$status.exit" || "$(cat "$status.exit")" == 0 ]]
}

_step_finish() {  # _step_finish RUN_DIR NAME CODE
  local status="$1/status/$2"
  echo "$3" > "$status.exit.tmp" && mv "$status.exit.tmp" "$status.exit"
  rm -f "$status.running"
}

_STEP_RUN=""
_STEP_NAME=""
_step_interrupted() {  # Ctrl-C, or SIGTERM (a SLURM time limit): record the step as failed, then die of
  # the same signal, so that a calling script (run_all.sh) stops too instead of going on
  if [[ -n "$_STEP_NAME" && "${RECORD_STATUS:-1}" == 1 ]]; then
    _step_finish "$_STEP_RUN" "$_STEP_NAME" "$2"
    echo "[$_STEP_NAME] interrupted (exit status $2 recorded)" >&2
  fi
  trap - "$1"
  kill -s "$1" "$$"
}
trap '_step_interrupted INT 130' INT
trap '_step_interrupted TERM 143' TERM

_marker() { sed -n "s/^$2=//p" "$1"; }  # _marker FILE KEY

_step_held() {  # the .running marker belongs to a process that may still run it
  local marker=$1 host pid job
  [[ -e "$marker" ]] || return 1
  host=$(_marker "$marker" host)
  pid=$(_marker "$marker" pid)
  job=$(_marker "$marker" slurm_job)
  if [[ -n "$job" && "$job" == "${SLURM_JOB_ID:-}" ]]; then return 1; fi  # this job, requeued
  if [[ "$host" == "$(hostname)" ]]; then kill -0 "$pid" 2> /dev/null; return; fi
  if [[ -n "$job" ]] && command -v squeue > /dev/null; then _slurm_job_alive "$job"; return; fi
  return 0  # another host: cannot tell from here
}

step() {
  local run=$1 name=$2 artifact=$3
  shift 3
  local status="$run/status/$name"
  if step_done "$run" "$name" "$artifact"; then
    echo "[$name] done before, skipped ($run/$artifact)"
    return 0
  fi
  if [[ "${RECORD_STATUS:-1}" != 1 ]]; then
    "$@"
    return
  fi
  if _step_held "$status.running"; then
    echo "[$name] is already running ($(tr '\n' ' ' < "$status.running")); not starting it twice." \
      "If that process is gone (its node died), delete $status.running" >&2
    return 1
  fi
  mkdir -p "$run/status"
  rm -f "$status.exit" "$status.submitted"
  # named before the marker is written: a signal from here on records the step as failed
  _STEP_RUN=$run
  _STEP_NAME=$name
  printf 'host=%s\npid=%s\nslurm_job=%s\nstarted=%s\n' \
    "$(hostname)" "$$" "${SLURM_JOB_ID:-}" "$(_now)" > "$status.running"
  echo "[$name] $(_now) $*" | tee -a "$status.log"
  set +e
  "$@" 2>&1 | tee -a "$status.log"
  local code=${PIPESTATUS[0]}
  set -e
  _STEP_NAME=""
  if [[ $code == 0 && ! -e "$run/$artifact" ]]; then
    echo "[$name] exited 0 but $run/$artifact was not written" | tee -a "$status.log" >&2
    code=1
  fi
  _step_finish "$run" "$name" "$code"
  echo "[$name] $(_now) exit status $code" | tee -a "$status.log"
  return "$code"
}

_slurm_job_alive() {  # queued or running according to squeue
  [[ -n "$1" ]] && command -v squeue > /dev/null && [[ -n "$(squeue -h -j "$1" -o %T 2> /dev/null)" ]]
}

submit() {
  local run=$1 steps=$2 file=$3 after=${4:-}
  local todo=() pair name job
  for pair in $steps; do
    name=${pair%%:*}
    step_done "$run" "$name" "${pair#*:}" || todo+=("$name")
  done
  ((${#todo[@]})) || return 0
  for name in "${todo[@]}"; do  # already in the queue: hand out that job for the dependencies
    for marker in "$run/status/$name.running" "$run/status/$name.submitted"; do
      [[ -e "$marker" ]] || continue
      job=$(_marker "$marker" slurm_job)
      if _slurm_job_alive "$job"; then
        echo "$run: ${todo[*]} already in SLURM job $job" >&2
        echo "$job"
        return 0
      fi
    done
  done
  local args=(--parsable)
  [[ -z "$after" ]] || args+=("--dependency=afterok:$after" --kill-on-invalid-dep=yes)
  mkdir -p "$run/status"  # the jobs' --output files go there
  job=$(sbatch "${args[@]}" "$file")
  job=${job%%;*}  # --parsable prints "id" or "id;cluster"
  for name in "${todo[@]}"; do
    rm -f "$run/status/$name.exit"
    printf 'slurm_job=%s\nsubmitted=%s\n' "$job" "$(_now)" > "$run/status/$name.submitted"
  done
  echo "$run: ${todo[*]} submitted as SLURM job $job${after:+ (after $after)}" >&2
  echo "$job"
}
