#!/usr/bin/env bash
# Installs the carpd Debian package on this machine, checks what it put
# where, purges it and checks that nothing of it is left. Needs root and a
# machine without carpd installed (CI's container). Usage:
#   packaging/check-deb.sh [path/to/carpd_*.deb]   # default: build it
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "check-deb: $*" >&2
    exit 1
}

if dpkg-query -W -f '${Status}' carpd 2>/dev/null | grep -q installed; then
    fail "carpd is already installed here; this check installs and purges it"
fi

deb=${1:-$(packaging/build-deb.sh)}
[ -f "$deb" ] || fail "no package at $deb"

# Whatever happens below, the package does not stay installed.
trap 'dpkg --purge carpd >/dev/null 2>&1 || true' EXIT

dpkg -i "$deb"
files=$(dpkg-query -L carpd)

# The binary, in /usr/sbin, of the packaged version.
[ -x /usr/sbin/carpd ] || fail "/usr/sbin/carpd missing"
version=$(/usr/sbin/carpd --version)
package_version=$(dpkg-query -W -f '${Version}' carpd)
[ "$version" = "carpd ${package_version%-*}" ] ||
    fail "carpd --version says '$version', the package is $package_version"

# The system user and group, from /usr/lib/sysusers.d/carpd.conf.
getent passwd carpd >/dev/null || fail "no carpd user"
getent group carpd >/dev/null || fail "no carpd group"
[ "$(getent passwd carpd | cut -d: -f7)" = /usr/sbin/nologin ] || fail "carpd user can log in"

# The default configuration: a conffile, readable by the service's group
# only, valid, and read as the user the unit runs carpd as.
dpkg-query -W -f '${Conffiles}' carpd | grep -q '^ /etc/carpd.toml ' ||
    fail "/etc/carpd.toml is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/carpd.toml)" = "root:carpd 640" ] ||
    fail "/etc/carpd.toml is $(stat -c '%U:%G %a' /etc/carpd.toml), expected root:carpd 640"
/usr/sbin/carpd --check-config --config /etc/carpd.toml
runuser -u carpd -- /usr/sbin/carpd --check-config --config /etc/carpd.toml >/dev/null ||
    fail "the carpd user cannot read or validate /etc/carpd.toml"

# The unit: installed, valid, not enabled. systemd-analyze verify needs no
# running systemd; it fails on a missing ExecStart= binary or a
# Documentation= man page `man` cannot find, but only warns (exit 0) about
# unknown keys and bad values, so any output is a failure too.
unit=/usr/lib/systemd/system/carpd.service
[ -f "$unit" ] || fail "$unit missing"
if ! verify=$(systemd-analyze verify "$unit" 2>&1) || [ -n "$verify" ]; then
    fail "systemd-analyze verify $unit: $verify"
fi
if [ -e /etc/systemd/system/multi-user.target.wants/carpd.service ]; then
    fail "the package enabled carpd.service"
fi

# Manual page and completions.
[ "$(man -w 8 carpd)" = /usr/share/man/man8/carpd.8.gz ] || fail "man carpd(8) not found"
zcat /usr/share/man/man8/carpd.8.gz | grep -q '^\.TH carpd 8 ' || fail "manual page not in section 8"
for f in /usr/share/bash-completion/completions/carpd \
    /usr/share/zsh/vendor-completions/_carpd \
    /usr/share/fish/vendor_completions.d/carpd.fish; do
    grep -q stepdown "$f" || fail "$f missing or not carpd's completions"
done

# Installing over itself (as an upgrade does) keeps an edited conffile and
# its mode, and the user.
echo "# edited" >>/etc/carpd.toml
dpkg -i "$deb"
grep -q '^# edited$' /etc/carpd.toml || fail "reinstalling replaced the edited /etc/carpd.toml"
[ "$(stat -c '%U:%G %a' /etc/carpd.toml)" = "root:carpd 640" ] ||
    fail "reinstalling changed /etc/carpd.toml to $(stat -c '%U:%G %a' /etc/carpd.toml)"

dpkg --purge carpd
trap - EXIT

# Nothing of the package is left: no file it installed (the directories it
# shares with other packages may stay), no conffile, no dpkg record.
if dpkg-query -W carpd >/dev/null 2>&1; then
    fail "dpkg still knows carpd after purge"
fi
left=$(while IFS= read -r f; do
    if [ -e "$f" ] && [ ! -d "$f" ]; then echo "$f"; fi
done <<<"$files")
[ -z "$left" ] || fail "left after purge: $left"
[ ! -e /usr/sbin/carpd ] || fail "/usr/sbin/carpd left after purge"
[ ! -e /etc/carpd.toml ] || fail "/etc/carpd.toml left after purge"
# The system user stays, as Debian does for system users: files it owned
# may outlive the package, and its uid must not be reused.
getent passwd carpd >/dev/null || fail "purge removed the carpd user"

echo "check-deb: $deb installs, checks out and purges cleanly"
