#!/usr/bin/env bash
# test_deploy_files: the scheduler files in deploy/ and the shipped pipeline are well formed.
#
#   systemd   `systemd-analyze verify` on finch-retrain.service + .timer (ExecStart pointed
#             at an existing binary, since the installed path need not exist here); any
#             warning fails, since verify exits 0 on settings it ignores. Type=oneshot and
#             SuccessExitStatus=3 (the runner's "another run holds the lock") are required.
#   YAML      (python3 with its yaml module) the Kubernetes manifests and pipelines/*.yaml
#             parse; the CronJob has concurrencyPolicy Forbid, FINCH_DATABASE_URL from a
#             Secret, resources and backoffLimit; the pipeline's steps, needs, commands and
#             ${...} references are consistent; with FINCH_BIN, `finch pipeline check` reads them.
#   cron      one job line: five valid time fields, a user, `finch pipeline run --no-wait`.
#   Docker    FROM debian:12 (or bookworm), scripts/install-deps.sh, scripts/fetch-pretrained.sh,
#             ENTRYPOINT finch.
# Each check also runs on a broken copy of its file and must reject it, so a check that
# passes everything fails the test. Exit: 0 passed, 1 failed, 77 skipped (systemd-analyze
# absent; the other checks still ran and passed).
#
# Usage: tests/deploy_check.sh SOURCE_DIR   (FINCH_BIN, when set, is the ExecStart stand-in)
set -uo pipefail

src="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/deploy_check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
failures=0
skipped=""

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect_ok NAME CMD... / expect_bad NAME CMD...: the check on a good file passes, on a broken one fails.
expect_ok() {
  local name="$1"; shift
  local out
  if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name: $out"; fi
}
expect_bad() {
  local name="$1"; shift
  if "$@" >/dev/null 2>&1; then fail "$name: a broken file was accepted"; else pass "$name (rejected)"; fi
}

# --- systemd -----------------------------------------------------------------------------
# check_units DIR: DIR holds finch-retrain.service and finch-retrain.timer.
check_units() {
  local d="$1" stand_in="${FINCH_BIN:-/bin/true}"
  [ -x "$stand_in" ] || stand_in=/bin/true
  mkdir -p "$d/v"
  sed "s#^ExecStart=[^ ]*#ExecStart=$stand_in#" "$d/finch-retrain.service" >"$d/v/finch-retrain.service"
  cp "$d/finch-retrain.timer" "$d/v/finch-retrain.timer"
  local out
  out="$(cd "$d/v" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no ./finch-retrain.service ./finch-retrain.timer 2>&1)" ||
    { echo "systemd-analyze verify failed: $out"; return 1; }
  [ -z "$out" ] || { echo "systemd-analyze verify warned: $out"; return 1; }
  grep -qx 'Type=oneshot' "$d/finch-retrain.service" || { echo "finch-retrain.service: no Type=oneshot"; return 1; }
  grep -Eq '^SuccessExitStatus=.*\b3\b' "$d/finch-retrain.service" ||
    { echo "finch-retrain.service: exit code 3 (lock held) is not a success"; return 1; }
  grep -Eq '^ExecStart=[^ ]*finch pipeline run .*pipelines/retrain\.yaml' "$d/finch-retrain.service" ||
    { echo "finch-retrain.service: ExecStart does not run finch pipeline run .../retrain.yaml"; return 1; }
  grep -qx 'Unit=finch-retrain.service' "$d/finch-retrain.timer" || { echo "finch-retrain.timer: no Unit=finch-retrain.service"; return 1; }
  grep -q '^OnCalendar=' "$d/finch-retrain.timer" || { echo "finch-retrain.timer: no OnCalendar="; return 1; }
}

if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$tmp/units" "$tmp/badunits"
  cp "$src/deploy/systemd/finch-retrain.service" "$src/deploy/systemd/finch-retrain.timer" "$tmp/units/"
  expect_ok "systemd units verify" check_units "$tmp/units"
  sed 's/^Type=oneshot/Type=onehsot/' "$src/deploy/systemd/finch-retrain.service" >"$tmp/badunits/finch-retrain.service"
  cp "$src/deploy/systemd/finch-retrain.timer" "$tmp/badunits/"
  expect_bad "systemd unit with a misspelt Type" check_units "$tmp/badunits"
  sed '/^SuccessExitStatus=/d' "$src/deploy/systemd/finch-retrain.service" >"$tmp/badunits/finch-retrain.service"
  expect_bad "systemd unit without SuccessExitStatus=3" check_units "$tmp/badunits"
else
  skipped="systemd-analyze is not installed (Debian package systemd), so the unit pair was not verified"
fi

# --- YAML --------------------------------------------------------------------------------
# check_yaml KIND FILE: KIND is cronjob, secret or pipeline.
check_yaml() {
  python3 - "$1" "$2" <<'PY'
import re, sys, yaml
kind, path = sys.argv[1], sys.argv[2]
def die(msg):
    print(f"{path}: {msg}"); sys.exit(1)
try:
    docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d is not None]
except yaml.YAMLError as e:
    die(f"not well-formed YAML: {e}")
if len(docs) != 1 or not isinstance(docs[0], dict):
    die("expected one YAML mapping")
d = docs[0]
if kind == "cronjob":
    if d.get("apiVersion") != "batch/v1" or d.get("kind") != "CronJob": die("not a batch/v1 CronJob")
    s = d.get("spec") or {}
    if s.get("concurrencyPolicy") != "Forbid": die("spec.concurrencyPolicy is not Forbid")
    if len(str(s.get("schedule", "")).split()) != 5: die("spec.schedule has not five fields")
    js = (s.get("jobTemplate") or {}).get("spec") or {}
    if not isinstance(js.get("backoffLimit"), int): die("jobTemplate.spec.backoffLimit missing")
    pod = (js.get("template") or {}).get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"): die("restartPolicy must be Never or OnFailure")
    cs = pod.get("containers") or []
    if not cs: die("no containers")
    c = cs[0]
    if not (c.get("resources") or {}).get("requests") or not (c.get("resources") or {}).get("limits"):
        die("container without resources.requests and resources.limits")
    env = {e.get("name"): e for e in c.get("env") or []}
    url = env.get("FINCH_DATABASE_URL") or {}
    if "value" in url or not ((url.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"):
        die("FINCH_DATABASE_URL does not come from a Secret (valueFrom.secretKeyRef)")
    cmd = (c.get("command") or []) + (c.get("args") or [])
    if cmd[:2] != ["pipeline", "run"] and cmd[:3] != ["finch", "pipeline", "run"]:
        die(f"the container does not run `finch pipeline run`: {cmd}")
elif kind == "secret":
    if d.get("apiVersion") != "v1" or d.get("kind") != "Secret": die("not a v1 Secret")
    if "FINCH_DATABASE_URL" not in (d.get("stringData") or d.get("data") or {}): die("no FINCH_DATABASE_URL key")
elif kind == "pipeline":
    runs = {"ingest", "augment", "teacher train", "distill", "compile", "eval", "rollout promote", "webhooks deliver"}
    name_re = re.compile(r"[a-z0-9_-]+\Z")
    allowed = {"pipeline", "variables", "steps"}
    if set(d) - allowed: die(f"unknown keys {sorted(set(d) - allowed)}")
    if not isinstance(d.get("pipeline"), str) or not name_re.match(d["pipeline"]): die("pipeline: missing or not [a-z0-9_-]+")
    variables = d.get("variables") or {}
    if not isinstance(variables, dict) or any(not isinstance(v, str) for v in variables.values()):
        die("variables: must map names to strings")
    steps = d.get("steps")
    if not isinstance(steps, list) or not steps: die("steps: missing or empty")
    names = []
    for i, st in enumerate(steps):
        if not isinstance(st, dict): die(f"steps[{i}]: not a mapping")
        extra = set(st) - {"name", "run", "needs", "with", "args", "skip_if_unchanged"}
        if extra: die(f"steps[{i}]: unknown keys {sorted(extra)}")
        n = st.get("name")
        if not isinstance(n, str) or not name_re.match(n): die(f"steps[{i}]: name missing or not [a-z0-9_-]+")
        if n in names: die(f"steps[{i}]: name {n} repeated")
        names.append(n)
        if st.get("run") not in runs: die(f"step {n}: run {st.get('run')!r} is not a pipeline command")
        if "skip_if_unchanged" in st and not isinstance(st["skip_if_unchanged"], bool):
            die(f"step {n}: skip_if_unchanged is not true or false")
    deps = {}
    for st in steps:
        n = st["name"]
        needs = st.get("needs") or []
        if not isinstance(needs, list): die(f"step {n}: needs is not a list")
        for m in needs:
            if m not in names: die(f"step {n}: needs unknown step {m}")
        refs = set()
        def walk(v):
            if isinstance(v, dict):
                for k, x in v.items(): walk(x)
            elif isinstance(v, list):
                for x in v: walk(x)
            elif isinstance(v, str):
                for ref in re.findall(r"\$\{([^}]*)\}", v):
                    if ref.startswith("env."):
                        if not re.match(r"env\.[A-Za-z_][A-Za-z0-9_]*\Z", ref): die(f"step {n}: bad ${{{ref}}}")
                    elif ref.startswith("steps."):
                        m = re.match(r"steps\.([a-z0-9_-]+)\.(model_id|report_id|dataset)\Z", ref)
                        if not m or m.group(1) not in names: die(f"step {n}: bad or unknown ${{{ref}}}")
                        refs.add(m.group(1))
                    elif ref not in variables:
                        die(f"step {n}: ${{{ref}}} is not a variable")
        walk(st.get("with") or {})
        walk(st.get("args") or [])
        if not isinstance(st.get("args", []), list): die(f"step {n}: args is not a list")
        deps[n] = set(needs) | refs
    # Every output a step reads comes from a step it (transitively) needs; no cycles.
    state = {}
    def visit(n, path):
        if state.get(n) == 1: die(f"needs form a cycle: {' -> '.join(path + [n])}")
        if state.get(n) == 2: return
        state[n] = 1
        for m in deps[n]: visit(m, path + [n])
        state[n] = 2
    for n in names: visit(n, [])
else:
    die(f"unknown kind {kind}")
PY
}

if ! command -v python3 >/dev/null 2>&1; then
  echo "note: python3 is not installed, so the YAML files were not checked"
elif ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "note: python3 has no yaml module (Debian package python3-yaml), so the YAML files were not checked"
else
  expect_ok "kubernetes/cronjob.yaml" check_yaml cronjob "$src/deploy/kubernetes/cronjob.yaml"
  expect_ok "kubernetes/secret.example.yaml" check_yaml secret "$src/deploy/kubernetes/secret.example.yaml"
  for p in "$src"/pipelines/*.yaml; do expect_ok "pipeline ${p#"$src"/}" check_yaml pipeline "$p"; done
  sed 's/concurrencyPolicy: Forbid/concurrencyPolicy: Allow/' "$src/deploy/kubernetes/cronjob.yaml" >"$tmp/cj1.yaml"
  expect_bad "CronJob allowing overlap" check_yaml cronjob "$tmp/cj1.yaml"
  python3 -c 'import sys; s=open(sys.argv[1]).read(); open(sys.argv[2],"w").write(s.replace("valueFrom:\n                    secretKeyRef:\n                      name: finch-database\n                      key: FINCH_DATABASE_URL", "value: postgresql://finch:pw@db/finch"))' \
    "$src/deploy/kubernetes/cronjob.yaml" "$tmp/cj2.yaml"
  expect_bad "CronJob with the database URL inline" check_yaml cronjob "$tmp/cj2.yaml"
  printf 'apiVersion: batch/v1\nkind: CronJob\nspec: {schedule: "* * *", concurrencyPolicy: Forbid\n' >"$tmp/cj3.yaml"
  expect_bad "malformed YAML" check_yaml cronjob "$tmp/cj3.yaml"
  printf 'pipeline: p\nsteps:\n  - {name: a, run: ingest}\n  - {name: a, run: augment}\n' >"$tmp/p1.yaml"
  expect_bad "pipeline with a repeated step name" check_yaml pipeline "$tmp/p1.yaml"
  printf 'pipeline: p\nsteps:\n  - {name: a, run: train}\n' >"$tmp/p2.yaml"
  expect_bad "pipeline with an unknown command" check_yaml pipeline "$tmp/p2.yaml"
  printf 'pipeline: p\nsteps:\n  - {name: a, run: ingest, needs: [b]}\n  - {name: b, run: augment, needs: [a]}\n' >"$tmp/p3.yaml"
  expect_bad "pipeline whose needs form a cycle" check_yaml pipeline "$tmp/p3.yaml"
  printf 'pipeline: p\nsteps:\n  - {name: a, run: compile, with: {model: "${nosuch}"}}\n' >"$tmp/p5.yaml"
  expect_bad "pipeline naming an undefined variable" check_yaml pipeline "$tmp/p5.yaml"
  printf 'pipeline: p\nsteps:\n  - {name: a, run: compile, with: {model: "${steps.zz.model_id}"}}\n' >"$tmp/p6.yaml"
  expect_bad "pipeline naming an unknown step's output" check_yaml pipeline "$tmp/p6.yaml"
fi

# --- the pipelines through finch's own parser ----------------------------------------------
# `finch pipeline check FILE` reads a pipeline as `pipeline run` does and runs nothing.
if [ -n "${FINCH_BIN:-}" ] && [ -x "$FINCH_BIN" ] && "$FINCH_BIN" pipeline --help >/dev/null 2>&1; then
  for p in "$src"/pipelines/*.yaml; do expect_ok "finch pipeline check ${p#"$src"/}" "$FINCH_BIN" pipeline check "$p"; done
  sed 's/^    needs: \[compile\]/    needs: [nosuch]/' "$src/pipelines/retrain.yaml" >"$tmp/retrain-bad.yaml"
  expect_bad "finch pipeline check on a step needing an unknown step" "$FINCH_BIN" pipeline check "$tmp/retrain-bad.yaml"
else
  echo "note: ${FINCH_BIN:-FINCH_BIN (unset)} has no pipeline command, so the pipelines were not read by finch itself"
fi

# --- crontab -----------------------------------------------------------------------------
# check_cron FILE: exactly one job line, its five time fields in range, then a user and
# `finch pipeline run --no-wait .../retrain.yaml`.
check_cron() {
  local f="$1" jobs line
  jobs="$(grep -Ev '^[[:space:]]*(#|$)' "$f" | grep -Ev '^[A-Za-z_][A-Za-z0-9_]*=')"
  [ "$(printf '%s\n' "$jobs" | grep -c .)" -eq 1 ] || { echo "$f: expected one job line, found: $jobs"; return 1; }
  line="$jobs"
  read -r -a w <<<"$line"
  [ "${#w[@]}" -ge 8 ] || { echo "$f: too few fields: $line"; return 1; }
  local -a lo=(0 0 1 1 0) hi=(59 23 31 12 7) names=(minute hour day-of-month month day-of-week)
  local i item part a b step
  for i in 0 1 2 3 4; do
    IFS=, read -r -a parts <<<"${w[$i]}"
    for item in "${parts[@]}"; do
      part="${item%%/*}"; step=""
      [ "$part" != "$item" ] && step="${item#*/}"
      if [ -n "$step" ] && ! [[ "$step" =~ ^[1-9][0-9]*$ ]]; then echo "$f: bad step in ${names[$i]} '${w[$i]}'"; return 1; fi
      [ "$part" = "*" ] && continue
      if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then a="${BASH_REMATCH[1]}"; b="${BASH_REMATCH[2]}"
      elif [[ "$part" =~ ^[0-9]+$ ]]; then a="$part"; b="$part"
      else echo "$f: ${names[$i]} field '${w[$i]}' is not a number, range, list or step"; return 1; fi
      if [ $((10#$a)) -lt "${lo[$i]}" ] || [ $((10#$b)) -gt "${hi[$i]}" ] || [ $((10#$a)) -gt $((10#$b)) ]; then
        echo "$f: ${names[$i]} '${w[$i]}' is out of ${lo[$i]}-${hi[$i]}"; return 1
      fi
    done
  done
  [[ "${w[5]}" =~ ^[a-z_][a-z0-9_-]*$ ]] || { echo "$f: field 6 should be the user (an /etc/cron.d line): '${w[5]}'"; return 1; }
  local cmd="${w[*]:6}" want='^([^ ]*/)?finch pipeline run --no-wait [^ ]*pipelines/retrain\.yaml( |$)'
  [[ "$cmd" =~ $want ]] ||
    { echo "$f: the command is not 'finch pipeline run --no-wait .../pipelines/retrain.yaml': $cmd"; return 1; }
}

cron="$src/deploy/cron/finch-retrain.crontab"
expect_ok "cron/finch-retrain.crontab" check_cron "$cron"
sed -E 's/^30   2  \*/30   2/' "$cron" >"$tmp/c1"
expect_bad "crontab line with four time fields" check_cron "$tmp/c1"
sed -E 's/^30   2 /30   24/' "$cron" >"$tmp/c2"
expect_bad "crontab hour 24" check_cron "$tmp/c2"
sed -E 's/--no-wait //' "$cron" >"$tmp/c3"
expect_bad "crontab command without --no-wait" check_cron "$tmp/c3"

# --- Dockerfile --------------------------------------------------------------------------
check_docker() {
  local f="$1" from body
  body="$(grep -Ev '^[[:space:]]*#' "$f")"
  from="$(printf '%s\n' "$body" | grep -Ei '^[[:space:]]*FROM[[:space:]]' | head -1 | awk '{print $2}')"
  [[ "$from" =~ ^(docker\.io/)?(library/)?debian:(12|bookworm)([.-][A-Za-z0-9.-]*)?(@sha256:[0-9a-f]{64})?$ ]] ||
    { echo "$f: first FROM is '$from', not debian:12 or debian:bookworm"; return 1; }
  # A RUN instruction or one of its continuation lines runs each script.
  printf '%s\n' "$body" | grep -Eq '^(RUN[[:space:]]|[[:space:]]+(&&|\|\||;)?[[:space:]]*)(.*[;&|][[:space:]]*)?scripts/install-deps\.sh' ||
    { echo "$f: scripts/install-deps.sh is not run"; return 1; }
  printf '%s\n' "$body" | grep -Eq '^(RUN[[:space:]]|[[:space:]]+(&&|\|\||;)?[[:space:]]*)(.*[;&|][[:space:]]*)?scripts/fetch-pretrained\.sh' ||
    { echo "$f: scripts/fetch-pretrained.sh is not run"; return 1; }
  printf '%s\n' "$body" | grep -Eq 'cmake .*-DCMAKE_BUILD_TYPE=Release' || { echo "$f: finch is not built Release"; return 1; }
  printf '%s\n' "$body" | grep -Eq '^ENTRYPOINT \["([^"]*/)?finch"\]' || { echo "$f: ENTRYPOINT is not finch"; return 1; }
}

expect_ok "Dockerfile" check_docker "$src/deploy/Dockerfile"
sed -E 's/^FROM debian:12/FROM ubuntu:24.04/' "$src/deploy/Dockerfile" >"$tmp/d1"
expect_bad "Dockerfile on another base" check_docker "$tmp/d1"
sed '/scripts\/install-deps\.sh/d' "$src/deploy/Dockerfile" >"$tmp/d2"
expect_bad "Dockerfile without install-deps.sh" check_docker "$tmp/d2"

if [ "$failures" -gt 0 ]; then
  echo "test_deploy_files: $failures check(s) failed" >&2
  exit 1
fi
if [ -n "$skipped" ]; then
  echo "test_deploy_files: the other checks passed; skipped: $skipped"
  exit 77
fi
echo "test_deploy_files: all checks passed"
