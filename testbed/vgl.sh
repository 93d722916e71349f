#!/usr/bin/env bash
# vizdesk test bed, TurboVNC + VirtualGL: TurboVNC 3.3 (server only, no Java viewer) and
# VirtualGL 3.1.4 built from source into prefixes of their own, and a per-node "3D X
# server" (Xvfb with GLX on Mesa llvmpipe) for VirtualGL's GLX back end.
#
#   vgl.sh build     verify the archives, build both (cached by checksum: seconds when built)
#   vgl.sh build-bg  start `build` in the background (log $DIR/log/build-bg.log) and return
#                    at once: `make test` starts it early so that the cold build overlaps
#                    the other tiers; `up` and `wait` wait for it
#   vgl.sh wait      wait for a build another process runs, then succeed if it finished
#   vgl.sh up        build, then start the 3D X server ($DIR/env names it)
#   vgl.sh down      stop the 3D X server (the builds stay)
#   vgl.sh status    one line per component; exit 0 when all are there
#
# Run as root on Debian 12. All state lives under $VIZDESK_VGL_DIR (default
# /var/lib/vizdesk-vgl). Neither prefix is relocatable (VirtualGL's vglrun hard-codes its
# library path, TurboVNC reads its config files from its prefix): they always live at
# $DIR/turbovnc and $DIR/virtualgl. Exit code 3: a source can be obtained neither from the
# vendor directory nor by download (the tiers skip, they do not fail).
set -euo pipefail
umask 022

DIR=${VIZDESK_VGL_DIR:-/var/lib/vizdesk-vgl}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
VENDOR=${VIZDESK_VENDOR_DIR:-$(cd "$REPO/.." && pwd)/shared/vendor}
# No pyenv shim or venv on PATH: CMake must find /usr/bin/python3.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
PYTHON=/usr/bin/python3

TVNC_VERSION=3.3
VGL_VERSION=3.1.4
LIBTURBOJPEG=/usr/lib/x86_64-linux-gnu/libturbojpeg.so
# Build dependencies, Debian 12 names (libxfont-dev carries xfont2.pc; there is no
# libxfont2-dev). libdrm/gbm/xshmfence: TurboVNC's DRI3 extension (on by default).
BUILD_DEPS=(build-essential cmake pkg-config libturbojpeg0-dev libx11-dev libxext-dev libxi-dev
    libxtst-dev libxv-dev libxkbfile-dev libxfont-dev libpixman-1-dev libpam0g-dev libssl-dev
    zlib1g-dev mesa-common-dev libgl-dev libegl-dev libglu1-mesa-dev libxcb1-dev
    libxcb-keysyms1-dev libxcb-glx0-dev libx11-xcb-dev libdrm-dev libgbm-dev libxshmfence-dev)
# Run time: Xvnc's keymap compiler and fonts, the 3D X server, glxinfo, Mesa's EGL/GLX.
RUN_DEPS=(xauth x11-xkb-utils xkb-data xfonts-base xvfb mesa-utils libegl-mesa0 libgl1-mesa-dri
    libturbojpeg0)

TVNC_PREFIX=$DIR/turbovnc
VGL_PREFIX=$DIR/virtualgl
TVNC_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DTVNC_BUILDVIEWER=0 -DTVNC_BUILDSERVER=1
    -DTVNC_BUILDINITSCRIPT=0 -DPython_EXECUTABLE=$PYTHON)
VGL_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DVGL_BUILDSERVER=1 -DVGL_FAKEOPENCL=0
    -DTJPEG_INCLUDE_DIR=/usr/include "-DTJPEG_LIBRARY=$LIBTURBOJPEG" -DCMAKE_INSTALL_LIBDIR=lib)
LOG=$DIR/log
RUN=$DIR/run
# The 3D X server: Xvfb with GLX (Mesa llvmpipe), its own auth file, readable by the test
# users (a site gives its 3D X server's cookie to the users allowed to use it).
DISPLAY3D_DEFAULT=:93
XVFB_PID=$RUN/xvfb3d.pid
XVFB_AUTH=$RUN/xvfb3d.xauth

BED=vgl
# shellcheck source=common.sh
source "$HERE/common.sh" # say die take_lock take_build_lock nolock install_packages ...

# --- build --------------------------------------------------------------------------------

# fetch_source NAME ARCHIVE GH_REPO TAG: set SOURCE and SOURCE_SHA256 to a verified archive.
# The vendored `git archive` export when present (checked against SHA256SUMS), else the
# project's release tarball from GitHub, checked against the SHA256 digest GitHub publishes
# for the release asset (or $VIZDESK_<NAME>_UPSTREAM_SHA256 when set).
fetch_source() {
    local name=$1 file=$2 repo=$3 tag=$4 sums=$VENDOR/SHA256SUMS archive=$VENDOR/$2 want got
    if [[ -f $archive && -f $sums ]]; then
        want=$(awk -v f="$file" '$2 == f || $2 == "*" f { print $1 }' "$sums")
        [[ -n $want ]] || die "$sums has no line for $file"
        got=$(sha256sum "$archive" | awk '{print $1}')
        [[ $got == "$want" ]] || die "$archive: SHA256 $got, SHA256SUMS says $want"
        SOURCE=$archive SOURCE_SHA256=$got
        return 0
    fi
    # UNTESTED here (github.com is not reachable from these machines).
    local tarball=$name-$tag.tar.gz var sha
    local url=https://github.com/$repo/releases/download/$tag/$tarball
    local dl=$DIR/download/$tarball
    mkdir -p "$DIR/download"
    if [[ -f $dl ]]; then SOURCE=$dl SOURCE_SHA256=$(sha256sum "$dl" | awk '{print $1}'); return 0; fi
    say "no $archive; downloading $url"
    var=VIZDESK_${name^^}_UPSTREAM_SHA256
    sha=${!var:-}
    if [[ -z $sha ]]; then
        sha=$(curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 "https://api.github.com/repos/$repo/releases/tags/$tag" |
            "$PYTHON" -c 'import json,sys; n=sys.argv[1]; print(next(a["digest"].split(":",1)[1] for a in json.load(sys.stdin)["assets"] if a["name"]==n and a.get("digest","").startswith("sha256:")))' "$tarball" 2>/dev/null) ||
            die_unbuildable "$file is not in $VENDOR and the published checksum of $url cannot be read (set $var)"
    fi
    curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 -o "$dl.part" "$url" || die_unbuildable "$file is not in $VENDOR and the download of $url failed"
    got=$(sha256sum "$dl.part" | awk '{print $1}')
    [[ $got == "$sha" ]] || die "$url: SHA256 $got, published $sha"
    mv "$dl.part" "$dl"
    SOURCE=$dl SOURCE_SHA256=$got
}

stamp_text() { # NAME VERSION PREFIX FLAGS...
    local name=$1 version=$2 prefix=$3
    shift 3
    printf '%s %s\nsource_sha256 %s\nprefix %s\ncmake %s\ndeps %s\n' \
        "$name" "$version" "$SOURCE_SHA256" "$prefix" "$*" "${BUILD_DEPS[*]}"
}

# cmake_build NAME VERSION PREFIX CHECK_FILE FLAGS...: unpack, configure, build, install.
cmake_build() {
    local name=$1 version=$2 prefix=$3 check=$4 src=$DIR/src/$1 t
    shift 4
    local stamp=$prefix/.vizdesk-build-stamp
    if [[ -f $stamp && $(cat "$stamp") == "$(stamp_text "$name" "$version" "$prefix" "$@")" && -x $prefix/$check ]]; then
        say "$name: $prefix is built from ${SOURCE_SHA256:0:12}… (cached)"
        return 0
    fi
    install_packages "${BUILD_DEPS[@]}"
    say "$name: building $version into $prefix (log $LOG/$name-build.log)"
    rm -rf "$src" "$prefix"
    mkdir -p "$src/build"
    t=$(date +%s)
    (
        echo "== $(date -Is) unpack $SOURCE"
        tar -xf "$SOURCE" -C "$src" --strip-components=1
        cd "$src/build"
        echo "== $(date -Is) cmake $*"
        nice -n 10 cmake -G "Unix Makefiles" "-DCMAKE_INSTALL_PREFIX=$prefix" \
            "-DCMAKE_INSTALL_SYSCONFDIR=$prefix/etc" "$@" ..
        echo "== $(date -Is) make -j2"
        nice -n 10 make -j2
        echo "== $(date -Is) make install"
        nice -n 10 make install
        find "$prefix" \( -name '*.a' -o -name '*.la' \) -delete
        echo "== $(date -Is) done"
    ) >"$LOG/$name-build.log" 2>&1 || die "$name build failed: $(tail -n 15 "$LOG/$name-build.log")"
    [[ -x $prefix/$check ]] || die "$name: the build installed no $prefix/$check"
    stamp_text "$name" "$version" "$prefix" "$@" >"$stamp"
    say "$name: built in $(($(date +%s) - t)) s, prefix $(du -sh "$prefix" | cut -f1)"
    printf '%s %s\n' "$(($(date +%s) - t))" "$(du -sk "$prefix" | cut -f1)" >"$LOG/$name-build.time"
    rm -rf "$src"
}

cmd_build() {
    take_build_lock
    rm -f "$DIR/.build-ok"
    install_packages "${RUN_DEPS[@]}"
    fetch_source turbovnc "turbovnc-$TVNC_VERSION.tar.xz" TurboVNC/turbovnc "$TVNC_VERSION"
    cmake_build turbovnc "$TVNC_VERSION" "$TVNC_PREFIX" bin/Xvnc "${TVNC_FLAGS[@]}"
    fetch_source virtualgl "virtualgl-$VGL_VERSION.tar.xz" VirtualGL/virtualgl "$VGL_VERSION"
    cmake_build virtualgl "$VGL_VERSION" "$VGL_PREFIX" bin/vglrun "${VGL_FLAGS[@]}"
    chmod -R a+rX "$TVNC_PREFIX" "$VGL_PREFIX"
    date -Is >"$DIR/.build-ok"
    say "build done in $(elapsed)s"
}

cmd_build_bg() {
    mkdir -p "$DIR" "$LOG"
    detach nohup "${BASH_SOURCE[0]}" build >"$LOG/build-bg.log" 2>&1 </dev/null
    say "build started in the background (pid $!, log $LOG/build-bg.log)"
}

# wait: block until no build runs, then succeed when the last build finished.
cmd_wait() {
    mkdir -p "$DIR"
    exec 8>"$DIR/.build.lock"
    flock -w "${1:-3600}" 8 || die "a build is still running"
    if [[ -f $DIR/.build-ok && -f $TVNC_PREFIX/.vizdesk-build-stamp && -f $VGL_PREFIX/.vizdesk-build-stamp ]]; then
        return 0
    fi
    # The background build's own verdict: 3 means unbuildable here.
    if grep -q 'cannot be read\|download of .* failed' "$LOG/build-bg.log" 2>/dev/null; then
        die_unbuildable "no finished build in $DIR: $(tail -n 1 "$LOG/build-bg.log")"
    fi
    die "no finished build in $DIR (see $LOG/build-bg.log)"
}

# --- the 3D X server ----------------------------------------------------------------------

xvfb_pid() {
    local pid
    [[ -r $XVFB_PID ]] || return 1
    pid=$(tr -dc '0-9' <"$XVFB_PID")
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == Xvfb ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$XVFB_AUTH" || return 1
    echo "$pid"
}

display3d() { sed -n 's/^VGL_DISPLAY=//p' "$DIR/env" 2>/dev/null || true; }

xvfb_ok() { XAUTHORITY=$XVFB_AUTH glxinfo -B -display "$1" >/dev/null 2>&1; }

start_xvfb() {
    local pid n disp
    if pid=$(xvfb_pid) && disp=$(display3d) && [[ -n $disp ]] && xvfb_ok "$disp"; then
        say "3D X server: running (pid $pid, display $disp)"
        DISPLAY3D=$disp
        return 0
    fi
    [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null
    install -d -m 0755 "$RUN"
    n=${DISPLAY3D_DEFAULT#:}
    while [[ -e /tmp/.X11-unix/X$n || -e /tmp/.X$n-lock ]]; do n=$((n + 1)); done
    disp=:$n
    rm -f "$XVFB_AUTH"
    touch "$XVFB_AUTH"
    xauth -f "$XVFB_AUTH" add "$disp" . "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    chmod 0644 "$XVFB_AUTH"
    detach Xvfb "$disp" -auth "$XVFB_AUTH" -screen 0 1920x1200x24 +extension GLX -nolisten tcp \
        -noreset >"$LOG/xvfb3d.log" 2>&1 </dev/null
    echo $! >"$XVFB_PID"
    local i
    for ((i = 0; i < 100; i++)); do
        xvfb_ok "$disp" && break
        sleep 0.1
    done
    xvfb_ok "$disp" || die "the 3D X server $disp did not start: $(tail -n 5 "$LOG/xvfb3d.log")"
    DISPLAY3D=$disp
    say "3D X server: started (pid $(cat "$XVFB_PID"), display $disp)"
}

write_env() {
    cat >"$DIR/env.tmp" <<EOF
VIZDESK_VGL_DIR=$DIR
TURBOVNC_PREFIX=$TVNC_PREFIX
VIRTUALGL_PREFIX=$VGL_PREFIX
VGL_DISPLAY=$DISPLAY3D
VGL_XAUTHORITY=$XVFB_AUTH
EOF
    mv -f "$DIR/env.tmp" "$DIR/env"
}

cmd_up() {
    cmd_build
    take_lock
    start_xvfb
    write_env
    say "up in $(elapsed)s: env $DIR/env"
}

cmd_down() {
    take_lock
    local pid
    if pid=$(xvfb_pid); then
        kill "$pid" 2>/dev/null || true
        say "3D X server: stopped (pid $pid)"
    fi
    rm -f "$DIR/env" "$XVFB_PID"
}

cmd_status() {
    local rc=0 pid p
    for p in "$TVNC_PREFIX:bin/Xvnc" "$VGL_PREFIX:bin/vglrun"; do
        if [[ -f ${p%%:*}/.vizdesk-build-stamp && -x ${p%%:*}/${p#*:} ]]; then
            printf '%-10s ok    %s (%s…)\n' "$(basename "${p%%:*}")" "${p%%:*}" "$(sed -n 's/^source_sha256 //p' "${p%%:*}/.vizdesk-build-stamp" | cut -c1-12)"
        else
            printf '%-10s none  %s\n' "$(basename "${p%%:*}")" "${p%%:*}"
            rc=1
        fi
    done
    if pid=$(xvfb_pid); then printf '%-10s up    pid %s, display %s\n' xvfb3d "$pid" "$(display3d)"
    else printf '%-10s down\n' xvfb3d; rc=1; fi
    return $rc
}

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

CMD=${1:-}
case $CMD in
    build) require_root_debian; cmd_build ;;
    build-bg) require_root_debian; cmd_build_bg ;;
    wait) cmd_wait "${2:-3600}" ;;
    up) require_root_debian; cmd_up ;;
    down) require_root_debian; cmd_down ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 64 ;;
esac
