#!/bin/sh
# The comparison run: every benchmark case on io_uring, on epoll and on
# the libuv reference, one after the other, in REPS rounds [5] with the
# order rotated each time, since this machine is noisy. Every raw line goes to
# the results file; then one markdown table of medians is printed, with
# ours divided by the reference.
#
# Usage: scripts/bench.sh BENCH UVPOOL [RESULTS]	run, then the table
#        scripts/bench.sh -table RESULTS		the table of a past run
#        scripts/bench.sh -ratios RESULTS		medians and ratios only
#
# A results line is `case impl rep` followed by the program's own line.
# A case named `base:variant` runs one of our options alone and is
# compared with the reference's `base`.
set -eu

# case, then the flags common to both programs, then our own flags,
# then how many times each implementation runs the case per round [1].
# A throughput run lasts tens of milliseconds and its figure moves by
# two times and more from run to run for every implementation, so those
# cases run three times a round: their medians are of 15 runs.
# Busy-polling takes one worker alone: two spinning workers and the
# sender would need three CPUs, and these machines may have two. Our
# timers case times one fire in eight; `timers:every` times every fire,
# as the reference does.
CASES='throughput|-mode throughput -workers 2 -handles 64 -producers 2 -events 2000000||3
throughput-1|-mode throughput -workers 2 -handles 1 -producers 1 -events 2000000||3
pingpong|-mode pingpong -events 200000|
latency|-mode latency -events 20000 -seconds 2|
latency:spin|-mode latency -events 20000 -seconds 2|-workers 1 -spin forever
churn|-mode churn -events 200000|
memory|-mode memory -handles 1000000|
timers|-mode timers -handles 100000 -seconds 3|
timers:every|-mode timers -handles 100000 -seconds 3|-probe 1'

# Figures shown, and which way is better; other keys describe the run.
# shellcheck disable=SC2016
SUMMARY='
BEGIN {
	n = split("events_per_sec:higher cpu_ns_per_event:lower " \
		"ns_per_roundtrip:lower p50_us:lower p99_us:lower " \
		"p999_us:lower max_us:lower cpu_percent:lower " \
		"ns_per_register_unregister:lower bytes_per_handle:lower " \
		"fds_per_handle:lower late_p99_us:lower", list, " ")
	for (i = 1; i <= n; i++) {
		split(list[i], kv, ":")
		better[kv[1]] = kv[2]
	}
}

/^# case / { flags[$3] = substr($0, index($0, $4)); next }
/^#/ || NF < 5 { next }

{
	c = $1
	if (!(c in seen)) {
		seen[c] = 1
		cases[++ncases] = c
	}
	for (i = 5; i <= NF; i++) {
		k = v = $i
		sub(/=.*/, "", k)
		sub(/^[^=]*=/, "", v)
		if (k == "steal_percent")
			note_steal(v + 0, $1 " " $2 " run " $3)
		if (!(k in better))
			continue
		if (!((c, k) in known)) {
			known[c, k] = 1
			keys[c, ++nkeys[c]] = k
		}
		vals[c, k, $2, ++count[c, k, $2]] = v
	}
}

# How much of the machine the host took during each run, and when most.
function note_steal(v, run) {
	steal[++nsteal] = v
	if (nsteal == 1 || v > steal_max) {
		steal_max = v
		steal_at = run
	}
}

# Sorts a[1..n] in place and returns its median.
function mid(a, n,    i, j, t) {
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
			t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
		}
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

function median(c, k, impl,    n, i, a) {
	n = count[c, k, impl]
	if (!n)
		return ""
	for (i = 1; i <= n; i++)
		a[i] = vals[c, k, impl, i] + 0
	return mid(a, n)
}

function ratio(x, y,    q) {
	if (x == "" || y == "" || y == 0)
		return "-"
	q = x / y
	return sprintf(q >= 10 ? "%.1f" : q >= 0.1 ? "%.2f" : "%.2g", q)
}

function num(x) {
	if (x == "")
		return "-"
	return sprintf(x >= 100 ? "%.0f" : x >= 10 ? "%.1f" : "%.2f", x)
}

function row(c, k,    base, u, e, r) {
	base = c
	if (!count[c, k, "libuv"])
		sub(/:.*/, "", base)
	u = median(c, k, "uring")
	e = median(c, k, "epoll")
	r = median(base, k, "libuv")
	if (mode == "ratios")
		print c, k, better[k], ratio(u, r), ratio(e, r)
	else
		printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", c, k,
			better[k], num(u), num(e), num(r), ratio(u, r),
			ratio(e, r)
}

END {
	if (mode != "ratios") {
		print "| case | figure | better | io_uring | epoll | libuv" \
			" | io_uring/libuv | epoll/libuv |"
		print "|---|---|---|--:|--:|--:|--:|--:|"
	}
	for (i = 1; i <= ncases; i++)
		for (j = 1; j <= nkeys[cases[i]]; j++)
			row(cases[i], keys[cases[i], j])
	if (mode == "ratios")
		exit
	print ""
	for (i = 1; i <= ncases; i++)
		if (cases[i] in flags)
			printf "- `%s`: %s\n", cases[i], flags[cases[i]]
	if (nsteal)
		printf "\nHost steal (CPU time the hypervisor gave to others, " \
			"as a share of all CPUs) per run: median %.1f %%, " \
			"most %.1f %% (%s).\n", mid(steal, nsteal), steal_max,
			steal_at
}
'

summary()
{
	awk -v mode="$1" "$SUMMARY" "$2"
}

# Prints the order of the three runs for repetition $1, rotated each time
# so that none always runs first, after the same neighbour.
impl_order()
{
	case $(($1 % 3)) in
	1) echo "uring epoll libuv" ;;
	2) echo "epoll libuv uring" ;;
	0) echo "libuv uring epoll" ;;
	esac
}

# The CPU time the hypervisor gave to others ("steal"), in clock ticks
# summed over every CPU; 0 where the kernel does not count it.
steal_ticks()
{
	awk '/^cpu / { print $9 + 0; exit }' /proc/stat 2>/dev/null || echo 0
}

# steal_percent TICKS0 NS0: the steal since then, as a percentage of all
# the CPUs' time over the same wall time.
steal_percent()
{
	awk -v s0="$1" -v s1="$(steal_ticks)" -v t0="$2" \
		-v t1="$(date +%s%N)" -v hz="$(getconf CLK_TCK)" \
		-v cpus="$(nproc)" 'BEGIN {
		wall = (t1 - t0) / 1e9
		if (wall > 0 && hz > 0)
			printf "%.1f", 100 * (s1 - s0) / hz / (wall * cpus)
		else
			printf "0.0"
	}'
}

# run_one CASE IMPL REP FLAGS OURS: appends the result line, or a
# comment saying what failed. A run that hangs fails after RUN_LIMIT.
run_one()
{
	if [ "$2" = libuv ]; then
		cmd="$UVPOOL $4"
	else
		cmd="$BENCH $4 $5 -backend $2"
	fi
	rc=0
	t0=$(date +%s%N)
	s0=$(steal_ticks)
	# shellcheck disable=SC2086 # the flags are words
	out=$(timeout "$RUN_LIMIT" $cmd 2>"$ERRS") || rc=$?
	steal=$(steal_percent "$s0" "$t0")
	if [ "$rc" -eq 0 ]; then
		printf '%s\n' "$out" |
			sed "s/^/$1 $2 $3 /; s/\$/ steal_percent=$steal/" \
			>>"$RESULTS"
	else
		printf '# FAILED %s %s %s (exit %s): %s\n' "$1" "$2" "$3" \
			"$rc" "$(tr '\n' ' ' <"$ERRS")" | tee -a "$RESULTS" >&2
	fi
}

run_rep()
{
	printf 'bench: run %d of %d ' "$1" "$REPS" >&2
	printf '%s\n' "$CASES" | while IFS='|' read -r name flags ours runs
	do
		i=0
		while [ "$i" -lt "${runs:-1}" ]; do
			for impl in $(impl_order "$(($1 + i))"); do
				# A variant of our options has no reference run.
				case $name:$impl in *:*:libuv) continue ;; esac
				run_one "$name" "$impl" "$1" "$flags" "$ours"
				printf . >&2
			done
			i=$((i + 1))
		done
	done
	echo >&2
}

header()
{
	printf '# bench %s, Linux %s, %s CPUs, %s rounds, commit %s\n' \
		"$(date -u +%Y-%m-%dT%H:%MZ)" "$(uname -r)" "$(nproc)" \
		"$REPS" "$(git rev-parse --short HEAD 2>/dev/null || echo -)"
	printf '%s\n' "$CASES" | while IFS='|' read -r name flags ours runs
	do
		printf '# case %s %s\n' "$name" "$flags${ours:+ $ours}"
	done
}

case ${1:-} in
-table)
	summary table "$2"
	exit 0 ;;
-ratios)
	summary ratios "$2"
	exit 0 ;;
-*|'')
	echo "usage: $0 BENCH UVPOOL [RESULTS] | -table|-ratios RESULTS" >&2
	exit 2 ;;
esac

BENCH=$1
UVPOOL=$2
RESULTS=${3:-build/bench/results.txt}
REPS=${REPS:-5}
RUN_LIMIT=${RUN_LIMIT:-120}
mkdir -p "$(dirname "$RESULTS")"
ERRS=$(mktemp)
trap 'rm -f "$ERRS"' EXIT
start=$(date +%s)

header >"$RESULTS"
rep=1
while [ "$rep" -le "$REPS" ]; do
	run_rep "$rep"
	rep=$((rep + 1))
done

printf '\nMedians of %s rounds on %s CPUs (throughput cases run three times\n' \
	"$REPS" "$(nproc)"
# shellcheck disable=SC2016
printf '%s\n%s\n%s\n\n' \
	'a round), each case on io_uring, epoll and libuv in turn. Ratios are' \
	'ours / libuv; our variants (`latency:spin`, `timers:every`) face the' \
	'base case of libuv.'
summary table "$RESULTS"
printf '\nbench: %ss; raw lines in %s\n' "$(($(date +%s) - start))" \
	"$RESULTS" >&2
# The runs happen in a pipeline's subshell: failures are read back.
! grep -q '^# FAILED' "$RESULTS"
