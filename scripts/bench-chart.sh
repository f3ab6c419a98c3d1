#!/bin/sh
# Draws a results file of scripts/bench.sh as an SVG: for every figure,
# the median of ours divided by the median of the libuv reference, one
# bar for io_uring and one for epoll, on a log scale around the
# reference's 1. Figures where more is better (events per second) are
# drawn inverted, as 1/figure, so that a bar below the line always means
# ours costs less. Figures without a ratio (the reference's is 0 or
# missing) are left out. gnuplot is installed on demand.
#
# Usage: scripts/bench-chart.sh [RESULTS [SVG]]
set -eu

here=$(dirname "$0")
results=${1:-build/bench/results.txt}
svg=${2:-$(dirname "$results")/bench.svg}

[ -r "$results" ] || { echo "bench-chart: no $results" >&2; exit 1; }
sh "$here/deps.sh" gnuplot:gnuplot-nox

data=$(mktemp)
trap 'rm -f "$data"' EXIT
sh "$here/bench.sh" -ratios "$results" | awk '
$4 == "-" && $5 == "-" { next }
{
	name = $2
	if ($3 == "higher") {
		name = "1/" $2
		$4 = $4 == "-" ? "-" : 1 / $4
		$5 = $5 == "-" ? "-" : 1 / $5
	}
	printf "\"%s %s\" %s %s\n", $1, name, $4, $5
}' >"$data"

# The axis starts a decade below half the smallest ratio, so that no bar
# sits on its bottom edge with no height to show.
low=$(awk '{
	for (i = NF - 1; i <= NF; i++)
		if ($i != "-" && (min == "" || $i + 0 < min))
			min = $i + 0
} END {
	if (min == "" || min <= 0)
		min = 1
	e = log(min / 2) / log(10)
	f = int(e)
	if (f > e)
		f--
	print 10 ^ f
}' "$data")

gnuplot <<EOF
set terminal svg size 1000,560 dynamic noenhanced font "sans,11" \
	background "white"
set output "$svg"
set title "workerpool against the libuv reference: medians of ours / theirs"
set ylabel "ours / reference (log scale; below 1, ours costs less)"
set datafile missing "-"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [$low:*]
set grid ytics
set xtics rotate by 40 right nomirror
set key outside top center horizontal
set bmargin 11
set lmargin 16
plot "$data" using 2:xtic(1) title "io_uring" lc rgb "#3366aa", \
	"" using 3 title "epoll" lc rgb "#dd8833", \
	1 with lines dashtype 2 lw 2 lc rgb "black" title "reference"
EOF
echo "bench-chart: wrote $svg" >&2
