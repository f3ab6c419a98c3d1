#!/bin/sh
# Runs each test program given and prints one closing line with the
# totals, after the lines of every failed check gathered together. Each
# program runs every test on both backends itself.
set -u
pass=0
fail=0
failed=""
for t in "$@"; do
	out=$("$t" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -n 1)
	checks=$(printf '%s' "$line" | sed -n 's/.*Checks: \([0-9]*\).*/\1/p')
	f=$(printf '%s' "$line" | sed -n 's/.*Failures: \([0-9]*\).*/\1/p')
	e=$(printf '%s' "$line" | sed -n 's/.*Errors: \([0-9]*\).*/\1/p')
	if [ -z "$checks" ]; then
		echo "$t: no Check summary (exit $rc)"
		fail=$((fail + 1))
		continue
	fi
	failed="$failed$(printf '%s\n' "$out" | grep -E ':[FE]:')
"
	bad=$((f + e))
	pass=$((pass + checks - bad))
	fail=$((fail + bad))
	[ "$rc" -eq 0 ] || [ "$bad" -gt 0 ] || fail=$((fail + 1))
done
printf '%s' "$failed" | grep -v '^$' | sed 's/^/failed: /'
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
