#!/bin/sh
# Makes sure the build's packages are present: liburing and Check, found
# through pkg-config. As root on Debian or Ubuntu they are installed with
# apt-get; otherwise the command to run is printed and the build stops.
# Extra Debian package names (for the benchmark, say) may be given as
# arguments; each is installed when its pkg-config module is missing.
set -eu

need=""
have() { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$1"; }

command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
have liburing || need="$need liburing-dev"
have check || need="$need check"
for extra in "$@"; do
	case "$extra" in
	libuv1-dev) have libuv || need="$need libuv1-dev" ;;
	*) command -v "${extra%%:*}" >/dev/null 2>&1 ||
		need="$need ${extra#*:}" ;;
	esac
done
[ -z "$need" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -qq $need >/dev/null
	exit 0
fi
echo "deps: missing packages; run: sudo apt-get install$need" >&2
exit 1
