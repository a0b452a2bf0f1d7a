#!/usr/bin/env bash
# Installs the Debian packages of requirements/debian.txt that are missing or at another version.
# A pinned version the mirror no longer has (a security update replaced it) is installed at the
# mirror's version instead, with a warning to update the pin.
set -euo pipefail
list="$(cd "$(dirname "$0")/.." && pwd)/requirements/debian.txt"
missing=()
while read -r spec; do
	[[ -z "$spec" || "$spec" == \#* ]] && continue
	pkg=${spec%%=*}
	want=${spec#*=}
	have=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
	[[ "$have" == "install ok installed $want" ]] || missing+=("$spec")
done <"$list"
((${#missing[@]} == 0)) && exit 0
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
apt() { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "$@"; }
echo "installing Debian packages: ${missing[*]}"
if ! apt install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
	apt update -qq
	if ! apt install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
		echo "WARNING: pinned versions not available; installing the mirror's (update $list)" >&2
		apt install -y -qq --no-install-recommends "${missing[@]%%=*}" >/dev/null
	fi
fi
