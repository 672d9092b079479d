#!/usr/bin/env bash
# Fetches Debian packages of *applications* (WordPress, …) for tests to serve, without installing
# them: `apt-get download` + `dpkg -x` into a cache directory.
#
#   scripts/fetch-debian-app.sh PACKAGE...
#
# Prints one extracted root per package on stdout, in argument order, e.g.
#   ~/.cache/tokio_php/apps/wordpress_6.1.9+dfsg1-0+deb12u1
# (the package's files are under it as they would be under /: usr/share/wordpress/…).
#
#   TOKIO_PHP_CACHE=/dir   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tokio_php)
#
# Each package is extracted once per version (the apt candidate): a completion marker, written
# last, makes later runs a no-op and a half-finished extraction is redone. `apt-get update` runs
# at most once, and only when apt does not know a package or cannot fetch it (missing or stale
# package lists). Maintainer scripts never run and nothing is installed.
set -euo pipefail
shopt -s inherit_errexit

log() { echo "fetch-debian-app: $*" >&2; }
die() { echo "fetch-debian-app: error: $*" >&2; exit 1; }

[ $# -gt 0 ] || die "usage: $0 PACKAGE..."
command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian-based system"
command -v dpkg >/dev/null || die "dpkg not found: this script needs a Debian-based system"

cache=${TOKIO_PHP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokio_php}
apps="$cache/apps"
mkdir -p "$apps" || die "cannot create $apps"

tmp_dirs=()
cleanup() {
  local dir
  for dir in "${tmp_dirs[@]}"; do
    rm -rf "$dir"
  done
}
trap cleanup EXIT

updated=0
# Refreshes the package lists, once per run.
update_lists() {
  [ "$updated" -eq 0 ] || return 1
  updated=1
  local sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "apt-get update needs root (no sudo found)"
    sudo=sudo
  fi
  log "refreshing apt package lists (apt-get update)"
  $sudo apt-get update -qq >&2 || die "apt-get update failed"
}

# The version apt would pick (the candidate), or nothing when apt does not know the package.
candidate_version() {
  local version
  version=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n1)
  if [ -n "$version" ] && [ "$version" != "(none)" ]; then
    echo "$version"
  fi
}

# Downloads "$1=$2" into $3; apt's output goes to $4.
download() {
  local pkg=$1 version=$2 dir=$3 out=$4
  # As root, apt downloads as the unprivileged `_apt` user: the directory must be writable by it,
  # or apt falls back to root with a warning.
  (cd "$dir" && apt-get download -q "$pkg=$version") >"$out" 2>&1
}

# Sets fetched_root to the extracted tree of $1 (no subshell: the update flag and the temporary
# directories to clean up are global).
fetched_root=
fetch() {
  local pkg=$1 version
  version=$(candidate_version "$pkg")
  if [ -z "$version" ]; then
    update_lists || true
    version=$(candidate_version "$pkg")
    [ -n "$version" ] || die "apt knows no installable version of package '$pkg' (check the name and /etc/apt/sources.list*)"
  fi

  # Epochs (1:2.3) keep their colon out of path names, as in .deb file names.
  local dest="$apps/${pkg}_${version//:/%3a}"
  local marker="$dest/.tokio_php-extracted"
  if [ -f "$marker" ]; then
    fetched_root=$dest
    return
  fi

  local dl
  dl=$(mktemp -d "${TMPDIR:-/tmp}/fetch-debian-app.XXXXXX") || die "cannot create a temporary directory"
  tmp_dirs+=("$dl")
  chmod 0777 "$dl"
  log "downloading $pkg $version"
  if ! download "$pkg" "$version" "$dl" "$dl/apt.log"; then
    # Lists older than the mirror (the version is gone) or missing: refresh once and retry with
    # whatever the candidate is now.
    if update_lists; then
      version=$(candidate_version "$pkg")
      [ -n "$version" ] || die "apt knows no installable version of package '$pkg' after apt-get update"
      dest="$apps/${pkg}_${version//:/%3a}"
      marker="$dest/.tokio_php-extracted"
      if [ -f "$marker" ]; then
        fetched_root=$dest
        return
      fi
      log "downloading $pkg $version (after apt-get update)"
    fi
    if ! download "$pkg" "$version" "$dl" "$dl/apt.log"; then
      sed 's/^/  /' "$dl/apt.log" >&2
      die "apt-get download $pkg=$version failed"
    fi
  fi

  local deb
  deb=$(find "$dl" -maxdepth 1 -name '*.deb' | head -n1)
  [ -n "$deb" ] || { sed 's/^/  /' "$dl/apt.log" >&2; die "apt-get download $pkg=$version produced no .deb"; }

  # Extract beside the destination, then move it into place and mark it complete: an interrupted
  # run leaves no marker and the next run starts over.
  local staging="$dest.partial.$$"
  tmp_dirs+=("$staging")
  rm -rf "$staging"
  dpkg -x "$deb" "$staging" || die "dpkg -x $deb failed"
  rm -rf "$dest"
  mv -T "$staging" "$dest" || die "cannot move the extracted $pkg into $dest"
  touch "$marker"
  log "extracted $pkg $version into $dest"
  fetched_root=$dest
}

roots=()
for pkg in "$@"; do
  case $pkg in
    "" | -* | *[!a-z0-9.+-]*) die "'$pkg' is not a Debian package name" ;;
  esac
  fetch "$pkg"
  roots+=("$fetched_root")
done
printf '%s\n' "${roots[@]}"
